#include "cli/bench_serve.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>
#include <vector>

#include "serve/server.h"

namespace trit::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct ClientRun {
  double first_token_s = -1;    // from the start of the run
  std::vector<double> token_s;  // when each chunk of text arrived, from the start of the run
  int64_t tokens = 0;
  bool ok = false;
  std::string last;  // the last event, or why there was none
};

// One streaming completion of fixed length: the time of its first chunk and its token count.
ClientRun stream_one(const std::string& host, int port, const nlohmann::json& body,
                     Clock::time_point t0) {
  ClientRun run;
  httplib::Client c(host, port);
  c.set_read_timeout(3600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string buffer;
  bool usage = false;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (run.first_token_s < 0) {
      run.first_token_s = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: {", 0) != 0) continue;
      run.last = event;
      const nlohmann::json j = nlohmann::json::parse(event.substr(6), nullptr, false);
      if (!j.is_object()) continue;
      if (j.contains("usage") && j["usage"].is_object()) {
        run.tokens = j["usage"].value("completion_tokens", int64_t(0));
        run.ok = true;
        usage = true;
      } else if (j.contains("choices") && !j["choices"].empty() &&
                 j["choices"][0].value("text", std::string()).size() > 0) {
        run.token_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        if (!usage) ++run.tokens;  // a server without usage in its stream: one token a chunk
      }
    }
    return true;
  };
  const httplib::Result r = c.send(req);
  if (r && r->status == 200 && !usage && run.tokens > 0) run.ok = true;
  if (!r) {
    run.last = "connection: " + httplib::to_string(r.error()) + " after " +
               std::to_string(std::chrono::duration<double>(Clock::now() - t0).count()) + " s";
  }
  if (r && r->status != 200)
    run.last = "HTTP " + std::to_string(r->status) + " " + r->body + buffer;
  return run;
}

// The rate while every stream decodes: chunks of text (a token each, or fewer where a token
// ends inside a character) that arrive between the last stream's first chunk and the first
// stream's last, per second; 0 when that window is too short to time (under 10 chunks).
double steady_rate(const std::vector<ClientRun>& runs) {
  double from = 0, to = 1e300;
  for (const ClientRun& r : runs) {
    if (r.token_s.empty()) return 0;
    from = std::max(from, r.token_s.front());
    to = std::min(to, r.token_s.back());
  }
  int64_t chunks = 0;
  for (const ClientRun& r : runs) {
    for (double t : r.token_s) chunks += t > from && t <= to ? 1 : 0;
  }
  return chunks >= 10 && to > from ? double(chunks) / (to - from) : 0;
}

// HOST and PORT of http://HOST:PORT[/].
std::pair<std::string, int> host_port(const std::string& url) {
  const std::string prefix = "http://";
  std::string rest = url.rfind(prefix, 0) == 0 ? url.substr(prefix.size()) : url;
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  int port = 0;
  if (colon != std::string::npos) {
    try {
      port = std::stoi(rest.substr(colon + 1));
    } catch (const std::exception&) {
      port = 0;
    }
  }
  if (colon == std::string::npos || colon == 0 || port <= 0 || port > 65535) {
    fail("--serve-url: expected http://HOST:PORT, got '" + url + "'");
  }
  return {rest.substr(0, colon), port};
}

}  // namespace

void run_serve_bench(LoadedModel& lm, const ServeBenchOptions& o) {
  const int64_t n_vocab = lm.model.info().n_vocab;
  if (!o.url.empty()) host_port(o.url);  // checked before any output
  const std::string target = o.url.empty() ? lm.model.device() : "the server at " + o.url;
  if (!o.json) {
    std::printf("serve: %lld prompt + %lld generated tokens per stream; %s\n",
                static_cast<long long>(o.n_prompt), static_cast<long long>(o.n_gen),
                target.c_str());
    std::printf("%8s %14s %14s %12s %12s %14s\n", "streams", "total tok/s", "per stream",
                "TTFT p50", "TTFT max", "decoding tok/s");
  }
  double single = 0, single_steady = 0;
  for (int64_t n : o.streams) {
    serve::ServeOptions so;
    so.port = 0;
    so.batch.n_slots = n;
    so.batch.n_ctx = o.n_prompt + o.n_gen + 1;
    so.batch.n_batch = o.n_batch;
    so.max_queue = n;
    std::unique_ptr<serve::Server> server;
    std::thread serving;
    std::string host = "127.0.0.1";
    int port = 0;
    if (o.url.empty()) {
      server = std::make_unique<serve::Server>(lm.model, std::vector<serve::ServedAdapter>{}, so);
      port = server->bind();
      serving = std::thread([&] { server->run(); });
    } else {
      std::tie(host, port) = host_port(o.url);
    }
    // n streams at once; prompts differ from the first token on (and from the warm-up's), so
    // no slot reuses another's cache.
    auto run_streams = [&](int64_t n_gen, int64_t salt) {
      std::vector<ClientRun> runs(static_cast<size_t>(n));
      std::vector<std::thread> clients;
      const Clock::time_point t0 = Clock::now();
      for (int64_t i = 0; i < n; ++i) {
        nlohmann::json prompt = nlohmann::json::array();
        for (int64_t t = 0; t < o.n_prompt; ++t) {
          prompt.push_back((i * 7919 + t * 131 + salt) % n_vocab);
        }
        const nlohmann::json body = {
            {"prompt", prompt}, {"max_tokens", n_gen},
            {"temperature", 0}, {"ignore_eos", true},
            {"stream", true},   {"stream_options", {{"include_usage", true}}}};
        clients.emplace_back([&, i, body] { runs[size_t(i)] = stream_one(host, port, body, t0); });
      }
      for (std::thread& t : clients) t.join();
      return std::pair{runs, std::chrono::duration<double>(Clock::now() - t0).count()};
    };
    // A short untimed round first: a GPU backend builds its pipelines on first use.
    run_streams(2, 7);
    const auto [runs, wall] = run_streams(o.n_gen, 1);
    if (server) {
      server->stop();
      serving.join();
    }
    int64_t tokens = 0;
    std::vector<double> ttft;
    for (const ClientRun& r : runs) {
      if (!r.ok) {
        throw Error("bench --serve: a stream of " + std::to_string(n) + " ended early: " + r.last);
      }
      tokens += r.tokens;
      ttft.push_back(r.first_token_s);
    }
    std::sort(ttft.begin(), ttft.end());
    const double rate = double(tokens) / wall;
    const double steady = steady_rate(runs);
    if (n == 1) single = rate, single_steady = steady;
    if (o.json) {
      std::printf("%s\n", nlohmann::json{{"streams", n},
                                         {"tokens_per_s", rate},
                                         {"per_stream_tokens_per_s", rate / double(n)},
                                         {"ttft_p50_ms", ttft[ttft.size() / 2] * 1e3},
                                         {"ttft_max_ms", ttft.back() * 1e3},
                                         {"decoding_tokens_per_s", steady},
                                         {"n_prompt", o.n_prompt},
                                         {"n_gen", o.n_gen},
                                         {"device", target}}
                              .dump()
                              .c_str());
    } else {
      std::printf("%8lld %14.1f %14.1f %9.0f ms %9.0f ms", static_cast<long long>(n), rate,
                  rate / double(n), ttft[ttft.size() / 2] * 1e3, ttft.back() * 1e3);
      if (steady > 0) {
        std::printf(" %14.1f", steady);
      } else {
        std::printf(" %14s", "-");
      }
      if (single > 0) std::printf("   (%.2fx one stream", rate / single);
      if (single > 0 && single_steady > 0 && steady > 0) {
        std::printf("; decoding %.2fx", steady / single_steady);
      }
      if (single > 0) std::printf(")");
      std::printf("\n");
    }
    std::fflush(stdout);
  }
}

}  // namespace trit::cli
