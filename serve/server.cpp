#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "serve/auth.h"
#include "serve/http_error.h"
#include "serve/jobs.h"
#include "serve/openai.h"
#include "serve/peer_socket.h"

namespace trit::serve {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// What the worker hands a request's HTTP thread: text pieces (and the tokens' logprobs, each
// before its text) as they come, then the result.
struct Pending {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::string> pieces;
  std::vector<TokenLogprob> logprobs;
  bool done = false;
  GenerateResult result;
  uint64_t id = 0;

  void push(std::string_view piece) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      pieces.emplace_back(piece);
    }
    cv.notify_all();
  }
  void push_logprob(const TokenLogprob& t) {
    std::lock_guard<std::mutex> lock(mutex);
    logprobs.push_back(t);
  }
  void finish(const GenerateResult& r) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      result = r;
      done = true;
    }
    cv.notify_all();
  }
};

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& param = "") {
  res.status = status;
  res.set_content(error_body(status, message, param), "application/json");
}

std::string sse(const json& j) {
  return "data: " + dump(j) + "\n\n";
}

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t t = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%016llx%04llx", prefix, static_cast<unsigned long long>(t),
                static_cast<unsigned long long>(counter++ & 0xffff));
  return buf;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Server::Impl {
  Model& model;
  std::vector<ServedAdapter> adapters;
  ServeOptions opts;
  std::string name;
  int64_t started = unix_time();
  BatchGenerator gen;
  httplib::Server http;
  std::thread worker;
  std::atomic<bool> stopping{false};
  std::atomic<bool> worker_stop{false};
  std::mutex adapters_mutex;  // guards the adapters' global scales
  std::mutex inflight_mutex;
  std::condition_variable inflight_cv;
  std::set<uint64_t> inflight;  // submitted, not yet ended
  // Completion responses not yet written to their client: the logger, which cpp-httplib calls
  // after a response's last byte, removes them. stop() waits for both sets to empty.
  std::set<const httplib::Request*> responding;
  std::unique_ptr<Jobs> jobs;
  std::mutex tasks_mutex;
  std::deque<std::function<void()>> tasks;  // run by the worker between steps (it owns the model)

  void on_worker(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(tasks_mutex);
    tasks.push_back(std::move(task));
  }
  void run_tasks() {
    std::deque<std::function<void()>> todo;
    {
      std::lock_guard<std::mutex> lock(tasks_mutex);
      todo.swap(tasks);
    }
    for (auto& t : todo) t();
  }
  void job_routes();

  Impl(Model& m, std::vector<ServedAdapter> a, ServeOptions o)
      : model(m), adapters(std::move(a)), opts(std::move(o)), gen(m, opts.batch) {
    name = opts.model_name.empty() ? std::filesystem::path(model.info().path).filename().string()
                                   : opts.model_name;
  }

  void log(const std::string& line) const {
    if (opts.log) opts.log(line);
  }

  void routes();
  // The request's body, or 413 when it is over max_body_bytes.
  const std::string& body_of(const httplib::Request& req) const;
  bool authorized(const httplib::Request& req, httplib::Response& res) const;
  void completion(const httplib::Request& req, httplib::Response& res, bool chat);
  json adapter_list();
  std::vector<AdapterScale> request_adapters(const CompletionRequest& r);
  void ended(const Pending& p);  // from the worker, when the request has ended
};

void Server::Impl::ended(const Pending& p) {
  {
    std::lock_guard<std::mutex> lock(inflight_mutex);  // p.id is set under it
    inflight.erase(p.id);
  }
  inflight_cv.notify_all();
}

const std::string& Server::Impl::body_of(const httplib::Request& req) const {
  if (int64_t(req.body.size()) > opts.max_body_bytes) {
    throw HttpError(413, "the request body is larger than the server's limit of " +
                             std::to_string(opts.max_body_bytes) + " bytes (--max-body-mb)");
  }
  return req.body;
}

bool Server::Impl::authorized(const httplib::Request& req, httplib::Response& res) const {
  if (opts.api_key.empty() || req.path == "/health") return true;
  if (bearer_matches(req.get_header_value("Authorization"), opts.api_key)) return true;
  send_error(res, 401, "invalid or missing API key (send \"Authorization: Bearer <key>\")");
  return false;
}

void Server::Impl::job_routes() {
  // The dataset streams to a file of the jobs folder (datasets can be larger than memory).
  http.Post("/v1/files", [this](const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
    if (!req.is_multipart_form_data()) {
      throw HttpError(400, "upload the JSONL dataset as multipart form data, field 'file'", "file");
    }
    Jobs::Upload up = jobs->begin_upload();
    std::string field, filename;
    bool found = false, too_large = false;
    reader(
        [&](const httplib::MultipartFormData& part) {
          field = part.name;
          if (field == "file" && !found) {
            found = true;
            filename = part.filename;
          }
          return true;
        },
        [&](const char* data, size_t n) {
          // A compressed upload's declared length is not what it inflates to.
          if (up.bytes() + int64_t(n) > opts.max_upload_bytes) {
            too_large = true;
            return false;
          }
          if (field == "file") up.write(data, n);
          return true;
        });
    if (too_large) {
      res.set_header("Connection", "close");
      throw HttpError(413, "the upload is larger than the server's limit of " +
                               std::to_string(opts.max_upload_bytes) + " bytes (--max-upload-mb)");
    }
    if (!found) {
      throw HttpError(400, "upload the JSONL dataset as multipart form data, field 'file'", "file");
    }
    send_json(res, jobs->finish_upload(up, filename));
  });
  http.Post("/v1/fine_tuning/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    send_json(res, jobs->create(parse_body(body_of(req)), opts.allow_paths));
  });
  http.Get("/v1/fine_tuning/jobs", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, jobs->list());
  });
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+))",
           [this](const httplib::Request& req, httplib::Response& res) {
             json j = jobs->get(req.matches[1]);
             std::lock_guard<std::mutex> lock(adapters_mutex);
             for (size_t i = 0; i < adapters.size(); ++i) {
               if (adapters[i].path.find(std::string(req.matches[1]) + "/") != std::string::npos) {
                 j["adapter_id"] = i;
               }
             }
             send_json(res, j);
           });
  http.Post(R"(/v1/fine_tuning/jobs/([^/]+)/cancel)",
            [this](const httplib::Request& req, httplib::Response& res) {
              send_json(res, jobs->cancel(req.matches[1]));
            });
  auto send_file = [](httplib::Response& res, const std::string& path, const char* type) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream bytes;
    bytes << f.rdbuf();
    res.set_content(bytes.str(), type);
  };
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+)/adapter)",
           [this, send_file](const httplib::Request& req, httplib::Response& res) {
             send_file(res, jobs->adapter_path(req.matches[1]), "application/octet-stream");
           });
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+)/metrics)",
           [this, send_file](const httplib::Request& req, httplib::Response& res) {
             send_file(res, jobs->result_path(req.matches[1], "metrics"), "application/jsonl");
           });
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+)/plot)",
           [this, send_file](const httplib::Request& req, httplib::Response& res) {
             send_file(res, jobs->result_path(req.matches[1], "plot"), "image/svg+xml");
           });
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+)/checkpoints)",
           [this](const httplib::Request& req, httplib::Response& res) {
             send_json(res, jobs->checkpoints(req.matches[1]));
           });
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+)/checkpoints/([^/]+)/([^/]+))",
           [this, send_file](const httplib::Request& req, httplib::Response& res) {
             send_file(res, jobs->checkpoint_file(req.matches[1], req.matches[2], req.matches[3]),
                       "application/octet-stream");
           });
  http.Get(R"(/v1/fine_tuning/jobs/([^/]+)/events)",
           [this](const httplib::Request& req, httplib::Response& res) {
             const std::string id = req.matches[1];
             jobs->get(id);  // 404 before the stream opens
             // ?from=N: the events after the first N (a client that reconnects).
             size_t from = 0;
             if (req.has_param("from")) {
               try {
                 from = size_t(std::stoull(req.get_param_value("from")));
               } catch (const std::exception&) {
                 throw HttpError(400, "'from' must be a number of events", "from");
               }
             }
             auto next = std::make_shared<size_t>(from);
             res.set_header("Cache-Control", "no-cache");
             res.set_chunked_content_provider(
                 "text/event-stream", [this, id, next](size_t, httplib::DataSink& sink) {
                   bool done = false;
                   for (const json& e : jobs->events(id, *next, 200, done)) {
                     ++*next;
                     const std::string chunk = sse(e);
                     if (!sink.write(chunk.data(), chunk.size())) return false;
                   }
                   if (done) {
                     const std::string end = "data: [DONE]\n\n";
                     sink.write(end.data(), end.size());
                     sink.done();
                   }
                   return true;
                 });
           });
}

json Server::Impl::adapter_list() {
  std::lock_guard<std::mutex> lock(adapters_mutex);
  json list = json::array();
  for (size_t i = 0; i < adapters.size(); ++i) {
    list.push_back({{"id", i}, {"path", adapters[i].path}, {"scale", adapters[i].scale}});
  }
  return list;
}

std::vector<AdapterScale> Server::Impl::request_adapters(const CompletionRequest& r) {
  std::lock_guard<std::mutex> lock(adapters_mutex);
  std::vector<float> scales(adapters.size(), 0.0f);
  if (r.lora) {  // the request's scales; adapters it does not list get 0
    for (const auto& [id, scale] : *r.lora) {
      if (size_t(id) < scales.size()) scales[size_t(id)] = scale;
    }
  } else {
    for (size_t i = 0; i < adapters.size(); ++i) scales[i] = adapters[i].scale;
  }
  std::vector<AdapterScale> uses;
  for (size_t i = 0; i < adapters.size(); ++i) {
    if (scales[i] != 0.0f) uses.push_back({adapters[i].adapter, scales[i]});
  }
  return uses;
}

void Server::Impl::completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  const Clock::time_point arrived = Clock::now();
  if (stopping) throw HttpError(503, "the server is shutting down");
  {
    std::lock_guard<std::mutex> lock(inflight_mutex);
    responding.insert(&req);
  }
  int64_t n_adapters = 0;
  {
    std::lock_guard<std::mutex> lock(adapters_mutex);
    n_adapters = int64_t(adapters.size());
  }
  CompletionRequest r = parse_completion(body_of(req), chat, model, n_adapters, name);
  if (gen.status().queued >= opts.max_queue) {
    res.set_header("Retry-After", "1");
    throw HttpError(503, "the server is busy: " + std::to_string(opts.max_queue) +
                             " requests are waiting for a slot; retry later");
  }
  if (int64_t(r.prompt.size()) >= gen.n_ctx()) {
    throw HttpError(400,
                    "the prompt has " + std::to_string(r.prompt.size()) + " tokens; a slot holds " +
                        std::to_string(gen.n_ctx()) + " (start the server with a larger -c)",
                    chat ? "messages" : "prompt");
  }
  auto pending = std::make_shared<Pending>();
  BatchRequest b;
  b.prompt = std::move(r.prompt);
  b.options = r.options;
  b.options.adapters = request_adapters(r);
  b.options.on_text = [pending](std::string_view piece) {
    pending->push(piece);
    return true;
  };
  const bool logprobs = r.options.logprobs >= 0;
  if (logprobs && r.stream) {
    b.options.on_logprob = [pending](const TokenLogprob& t) { pending->push_logprob(t); };
  }
  b.on_done = [this, pending](const GenerateResult& result) {
    pending->finish(result);
    ended(*pending);
  };
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(inflight_mutex);
    try {
      id = gen.submit(std::move(b));
    } catch (const Error& e) {
      throw HttpError(400, e.what());
    }
    pending->id = id;
    inflight.insert(id);
  }
  const ReplyHeader header{random_id(chat ? "chatcmpl-" : "cmpl-"), unix_time(), name, chat};
  const auto deadline = arrived + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(opts.timeout_seconds));
  if (!r.stream) {
    bool timed_out = false;
    const int socket = find_peer_socket(req.remote_addr, req.remote_port);
    {
      std::unique_lock<std::mutex> lock(pending->mutex);
      // In slices, to see a client that hangs up: its request ends at the next step.
      while (!pending->cv.wait_for(lock, std::chrono::milliseconds(100),
                                   [&] { return pending->done; })) {
        if (Clock::now() > deadline) {
          timed_out = true;
          gen.cancel(id);
        } else if (socket >= 0 && peer_closed(socket)) {
          gen.cancel(id);
        }
      }
    }
    const GenerateResult& result = pending->result;
    if (!result.error.empty()) throw HttpError(500, "generation failed: " + result.error);
    if (timed_out) {
      throw HttpError(504, "the request ran longer than the server's timeout of " +
                               json(opts.timeout_seconds).dump() + " s");
    }
    json lp = nullptr;
    if (logprobs) {
      std::vector<int64_t> offsets;
      const size_t n = logprobs_in_text(model, result, &offsets);
      lp = logprobs_json(model, chat, std::span(result.logprobs).first(n), offsets);
    }
    send_json(res, completion_response(header, result, lp));
    return;
  }
  // Streaming: each piece as a chunk; a client that goes away cancels the request. With
  // logprobs, a chunk carries those of the tokens whose text starts in what has been sent.
  struct StreamState {
    bool first = true;
    bool closed = false;
    std::vector<TokenLogprob> logprobs;  // received, not yet sent
    std::vector<int64_t> offsets;        // where each one's text starts
    int64_t next_offset = 0;             // where the next token's text starts
    int64_t sent = 0;                    // bytes of text sent
  };
  auto state = std::make_shared<StreamState>();
  const bool include_usage = r.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, pending, state, header, deadline, include_usage, id, logprobs, chat](
          size_t, httplib::DataSink& sink) {
        std::deque<std::string> pieces;
        bool done = false;
        {
          std::unique_lock<std::mutex> lock(pending->mutex);
          pending->cv.wait_for(lock, std::chrono::milliseconds(100),
                               [&] { return pending->done || !pending->pieces.empty(); });
          pieces.swap(pending->pieces);
          for (const TokenLogprob& t : pending->logprobs) {
            state->logprobs.push_back(t);
            state->offsets.push_back(state->next_offset);
            state->next_offset += int64_t(model.token_text(t.token).size());
          }
          pending->logprobs.clear();
          done = pending->done;
        }
        // The logprobs of the tokens whose text starts before `end` (taken from the state).
        auto take_logprobs = [&](int64_t end) -> json {
          if (!logprobs) return nullptr;
          size_t n = 0;
          while (n < state->logprobs.size() && state->offsets[n] < end) ++n;
          const json j = logprobs_json(model, chat, std::span(state->logprobs).first(n),
                                       std::span(state->offsets).first(n));
          state->logprobs.erase(state->logprobs.begin(), state->logprobs.begin() + ptrdiff_t(n));
          state->offsets.erase(state->offsets.begin(), state->offsets.begin() + ptrdiff_t(n));
          return j;
        };
        for (const std::string& p : pieces) {
          state->sent += int64_t(p.size());
          const std::string chunk =
              sse(text_chunk(header, p, state->first, take_logprobs(state->sent)));
          state->first = false;
          if (!sink.write(chunk.data(), chunk.size())) {
            gen.cancel(id);  // the client went away
            return false;
          }
        }
        if (!done) {
          if (Clock::now() > deadline) gen.cancel(id);  // ends with the next step
          return true;
        }
        const GenerateResult& result = pending->result;
        std::string tail;
        if (!result.error.empty()) {
          tail += "data: " + error_body(500, "generation failed: " + result.error) + "\n\n";
        } else {
          if (state->first) tail += sse(text_chunk(header, "", true, take_logprobs(0)));
          tail += sse(final_chunk(header, result, take_logprobs(int64_t(result.text.size()))));
          if (include_usage) tail += sse(usage_chunk(header, result));
        }
        tail += "data: [DONE]\n\n";
        sink.write(tail.data(), tail.size());
        sink.done();
        state->closed = true;
        return true;
      },
      [this, id, request = &req](bool) {
        gen.cancel(id);  // the response is over: a request still running (client gone) ends
        std::lock_guard<std::mutex> lock(inflight_mutex);
        if (responding.erase(request)) inflight_cv.notify_all();
      });
}

void Server::Impl::routes() {
  // An upload declared larger than its limit is refused before its body is read; the body
  // left unread, the connection closes. Other bodies are read (up to the upload limit) and
  // held to max_body_bytes by body_of(), so that their clients get the 413.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return httplib::Server::HandlerResponse::Handled;
    const std::string length = req.get_header_value("Content-Length");
    if (req.path == "/v1/files" && !length.empty() &&
        std::strtoll(length.c_str(), nullptr, 10) > opts.max_upload_bytes) {
      send_error(res, 413,
                 "the upload is larger than the server's limit of " +
                     std::to_string(opts.max_upload_bytes) + " bytes (--max-upload-mb)");
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    // httplib inflates gzip and brotli bodies without a bound on what they inflate to: only an
    // upload may come compressed, and its reader counts the inflated bytes against its limit.
    const std::string encoding = req.get_header_value("Content-Encoding");
    if (!encoding.empty() && encoding != "identity" && req.path != "/v1/files") {
      send_error(res, 415,
                 "a compressed request body (Content-Encoding) is accepted on POST /v1/files "
                 "only");
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    {
      std::lock_guard<std::mutex> lock(inflight_mutex);
      if (responding.erase(&req)) inflight_cv.notify_all();
    }
    log(req.method + " " + req.path + " " + std::to_string(res.status) + " " + req.remote_addr);
  });
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      send_error(res, 404, "no endpoint " + req.method + " " + req.path);
    } else if (res.status == 413) {
      send_error(res, 413,
                 "the request body is larger than the server's limit of " +
                     std::to_string(req.path == "/v1/files" ? opts.max_upload_bytes
                                                            : opts.max_body_bytes) +
                     " bytes");
    } else {
      send_error(res, res.status, "the request failed (HTTP " + std::to_string(res.status) + ")");
    }
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const HttpError& e) {
          send_error(res, e.status(), e.what(), e.param());
        } catch (const Error& e) {
          send_error(res, 400, e.what());
        } catch (const std::exception& e) {
          send_error(res, 500, std::string("internal error: ") + e.what());
        } catch (...) {
          send_error(res, 500, "internal error");
        }
      });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const BatchGenerator::Status s = gen.status();
    send_json(res, {{"status", stopping ? "stopping" : "ok"},
                    {"model", name},
                    {"device", model.device()},
                    {"slots_idle", s.slots - s.active},
                    {"slots_processing", s.active},
                    {"requests_queued", s.queued}});
  });
  // trit's own: the devices of this machine (what `trit devices` prints, and as a list), and
  // the one serving; `trit devices --delegate KEY` shows a provider's.
  http.Get("/v1/devices", [this](const httplib::Request&, httplib::Response& res) {
    json list = json::array();
    for (const DeviceInfo& d : list_devices()) {
      list.push_back({{"name", d.name},
                      {"description", d.description},
                      {"kind", d.kind},
                      {"real_gpu", d.real_gpu},
                      {"default", d.is_default},
                      {"memory_bytes", d.memory_bytes},
                      {"binding_limit_bytes", d.binding_limit_bytes},
                      {"features", d.features}});
    }
    send_json(res, {{"object", "list"},
                    {"serving", model.device()},
                    {"data", list},
                    {"report", devices_report()}});
  });
  auto models = [this](const httplib::Request&, httplib::Response& res) {
    const ModelInfo& i = model.info();
    json meta = {{"n_vocab", i.n_vocab}, {"n_ctx_train", i.n_ctx_train}, {"n_embd", i.n_embd},
                 {"n_layer", i.n_layer}, {"n_ctx_slot", gen.n_ctx()},    {"family", i.family}};
    send_json(res, {{"object", "list"},
                    {"data", json::array({{{"id", name},
                                           {"object", "model"},
                                           {"created", started},
                                           {"owned_by", "trit"},
                                           {"meta", meta}}})}});
  };
  http.Get("/v1/models", models);
  http.Get("/models", models);
  auto completions = [this](const httplib::Request& q, httplib::Response& s) {
    completion(q, s, false);
  };
  auto chats = [this](const httplib::Request& q, httplib::Response& s) { completion(q, s, true); };
  http.Post("/v1/completions", completions);
  http.Post("/completions", completions);
  http.Post("/v1/chat/completions", chats);
  http.Post("/chat/completions", chats);
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    const TokenizeRequest t = parse_tokenize(body_of(req));
    const std::vector<int32_t> ids = model.tokenize(t.content, t.add_special, t.parse_special);
    json tokens = json::array();
    for (int32_t id : ids) {
      tokens.push_back(t.with_pieces ? json{{"id", id}, {"piece", model.token_text(id)}}
                                     : json(id));
    }
    send_json(res, {{"tokens", tokens}});
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    const std::vector<int32_t> ids = parse_detokenize(body_of(req), model.info().n_vocab);
    send_json(res, {{"content", model.detokenize(ids)}});
  });
  http.Get("/lora-adapters", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, adapter_list());
  });
  http.Post("/lora-adapters", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string body = body_of(req);
    std::lock_guard<std::mutex> lock(adapters_mutex);
    const std::vector<float> scales = parse_adapter_scales(body, adapters.size());
    for (size_t i = 0; i < adapters.size(); ++i) adapters[i].scale = scales[i];
    json list = json::array();
    for (size_t i = 0; i < adapters.size(); ++i) {
      list.push_back({{"id", i}, {"path", adapters[i].path}, {"scale", adapters[i].scale}});
    }
    send_json(res, list);
  });
}

Server::Server(Model& model, std::vector<ServedAdapter> adapters, ServeOptions options) {
  if (!is_loopback_host(options.host) && options.api_key.empty()) {
    throw Error("serve: host " + options.host +
                    " is reachable from other machines: serving there needs an API key (or "
                    "bind to 127.0.0.1)",
                "api_key");
  }
  if (options.max_queue < 0) throw Error("serve: max_queue must be 0 or more", "max_queue");
  if (options.max_body_bytes <= 0)
    throw Error("serve: the body limit must be positive", "max_body");
  if (!(options.timeout_seconds > 0)) throw Error("serve: the timeout must be positive", "timeout");
  impl_ = std::make_unique<Impl>(model, std::move(adapters), std::move(options));
  Impl& s = *impl_;
  // httplib's limit is the larger one (uploads); other requests are held to max_body_bytes by
  // their declared length before their body is read (Impl::routes' pre-routing handler).
  s.http.set_payload_max_length(size_t(
      std::max(s.opts.max_body_bytes, s.opts.jobs_dir.empty() ? 0 : s.opts.max_upload_bytes)));
  // Without it a kept-alive connection waits ~40 ms for each answer (Nagle against delayed ACK).
  s.http.set_tcp_nodelay(true);
  // A thread per connection that waits for its tokens: every slot and every queued request
  // must have one, with some left for /health and the like.
  const size_t threads = size_t(s.opts.batch.n_slots + s.opts.max_queue + 8);
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.routes();
  if (!s.opts.jobs_dir.empty()) {
    Impl* impl = &s;
    s.jobs = std::make_unique<Jobs>(
        s.opts.jobs_dir, s.opts.model_path, s.opts.model_options,
        [impl](const std::string& id, const std::string& path) {
          // A finished job's adapter joins the server's list (scale 0: requests ask for it).
          impl->on_worker([impl, id, path] {
            try {
              Adapter a = impl->model.load_adapter(path);
              std::lock_guard<std::mutex> lock(impl->adapters_mutex);
              impl->adapters.push_back({a, path, 0.0f});
            } catch (const Error& e) {
              impl->log("fine-tuning job " + id + ": its adapter does not load: " + e.what());
            }
          });
        });
    s.job_routes();
  }
}

Server::~Server() {
  stop();
  if (impl_->worker.joinable()) {
    impl_->worker_stop = true;
    impl_->worker.join();
  }
}

int Server::bind() {
  Impl& s = *impl_;
  // cpp-httplib listens with a backlog of 5: a burst of clients connecting at once (every slot
  // of --parallel 16) would see connections dropped. The socket's backlog is raised after
  // bind (listen() again on a listening socket sets it anew).
  int listener = -1;
  s.http.set_socket_options([&listener](socket_t sock) {
    httplib::default_socket_options(sock);
    listener = sock;
  });
  int port = s.opts.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.opts.host);
  } else if (!s.http.bind_to_port(s.opts.host, port)) {
    port = -1;
  }
  if (port < 0) {
    throw Error("serve: cannot listen on " + s.opts.host + ":" + std::to_string(s.opts.port) +
                " (in use, or not an address of this machine)");
  }
  if (listener >= 0) ::listen(listener, SOMAXCONN);
  return port;
}

void Server::run() {
  Impl& s = *impl_;
  s.worker = std::thread([&s] {
    while (!s.worker_stop) {
      s.run_tasks();
      const bool worked = s.gen.step();
      if (s.jobs) {  // serving first: a fine-tuning job waits while requests run
        const BatchGenerator::Status st = s.gen.status();
        s.jobs->set_serving(worked || st.active > 0 || st.queued > 0);
      }
      if (!worked) s.gen.wait_for_work(50);
    }
  });
  s.http.listen_after_bind();
  s.worker_stop = true;
  s.worker.join();
}

void Server::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;
  // Running requests end at the next step; their responses close before the listener does.
  std::unique_lock<std::mutex> lock(s.inflight_mutex);
  for (uint64_t id : s.inflight) s.gen.cancel(id);
  s.inflight_cv.wait_for(lock, std::chrono::seconds(10),
                         [&] { return s.inflight.empty() && s.responding.empty(); });
  lock.unlock();
  if (s.jobs) s.jobs->shutdown();  // the running job writes a checkpoint
  s.http.stop();
}

}  // namespace trit::serve
