// `trit serve` end to end: the real binary on a free port of 127.0.0.1, real sockets, the
// shipped model on the CPU. Results are checked against the CLI's own generation (greedy, the
// same prompt and adapters), and every error against OpenAI's error object.
#include "support/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/lora.h"
#include "io/adapter_gguf.h"
#include "model/model.h"
#include "support/adapters.h"
#include "support/cli.h"
#include "support/files.h"
#include "trit/trit.hpp"

namespace trit::engine::test {
namespace {

using nlohmann::json;

const std::string kModel = std::string(TRIT_TEST_DATA) + "/../../models/austen-tiny.gguf";
const std::string kPrompt = "It is a truth universally acknowledged";

struct Reply {
  int status = 0;
  json body;
  std::string retry_after;
};

Reply post(const ServerProcess& s, const std::string& path, const std::string& body,
           const httplib::Headers& headers = {}) {
  httplib::Client c = s.client();
  auto r = c.Post(path, headers, body, "application/json");
  if (!r) return {-1, json(), ""};
  return {r->status, json::parse(r->body, nullptr, false), r->get_header_value("Retry-After")};
}

Reply get(const ServerProcess& s, const std::string& path, const httplib::Headers& headers = {}) {
  httplib::Client c = s.client();
  auto r = c.Get(path, headers);
  if (!r) return {-1, json(), ""};
  return {r->status, json::parse(r->body, nullptr, false), ""};
}

// The data lines of a streamed response; on_event(n) after each (false: hang up).
std::vector<std::string> stream(const ServerProcess& s, const std::string& path, const json& body,
                                const std::function<bool(size_t)>& on_event = nullptr) {
  httplib::Client c = s.client();
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string buffer;
  std::vector<std::string> events;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) == 0) events.push_back(event.substr(6));
      if (on_event && !on_event(events.size())) return false;
    }
    return true;
  };
  c.send(req);
  return events;
}

// What `trit generate` prints after the prompt, greedy.
std::string cli_generate(const TempDir& dir, const std::vector<std::string>& extra, int n) {
  std::vector<std::string> args = {"generate",        "-m",     kModel, "-p", kPrompt, "-n",
                                   std::to_string(n), "--temp", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  if (std::find(extra.begin(), extra.end(), "--device") == extra.end()) {
    args.insert(args.end(), {"--device", "cpu"});
  }
  const RunResult r = run_trit(dir, args);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind(kPrompt, 0), 0u) << r.out;
  return r.out.substr(kPrompt.size(), r.out.size() - kPrompt.size() - 1);  // without the "\n"
}

json completion(int n, const json& extra = json::object()) {
  json b = {{"prompt", kPrompt}, {"max_tokens", n}, {"temperature", 0}};
  b.update(extra);
  return b;
}

// An adapter of the shipped model's shape with random A and B: it changes what is generated.
std::string random_adapter_file(const TempDir& dir) {
  auto model = Model::load(kModel);
  const std::string path = dir.file("adapter.gguf");
  save_adapter_gguf(
      random_adapter(model->hparams(),
                     {.targets = "all", .rank = 4, .alpha = 8.0f, .sd = 0.2f, .seed = 7}),
      path);
  return path;
}

TEST(Serve, EndpointsAnswerAsOpenAiAndLlamaServerDo) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--parallel", "2"});
  ASSERT_GT(s.port(), 0);
  const Reply health = get(s, "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body["status"], "ok");
  EXPECT_EQ(health.body["slots_idle"], 2);
  const Reply models = get(s, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.body["object"], "list");
  EXPECT_EQ(models.body["data"][0]["id"], "austen-tiny.gguf");
  // A completion is the CLI's greedy generation, with usage and timings.
  const std::string want = cli_generate(dir, {}, 24);
  const Reply c = post(s, "/v1/completions", completion(24).dump());
  ASSERT_EQ(c.status, 200) << c.body.dump();
  EXPECT_EQ(c.body["object"], "text_completion");
  EXPECT_EQ(c.body["choices"][0]["text"], want);
  EXPECT_EQ(c.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c.body["usage"]["completion_tokens"], 24);
  const Reply tok = post(s, "/tokenize", json{{"content", kPrompt}, {"add_special", true}}.dump());
  ASSERT_EQ(tok.status, 200);
  EXPECT_EQ(c.body["usage"]["prompt_tokens"], tok.body["tokens"].size());
  EXPECT_EQ(c.body["timings"]["predicted_n"], 24);
  const Reply detok =
      post(s, "/detokenize",
           json{{"tokens", post(s, "/tokenize", json{{"content", kPrompt}}.dump()).body["tokens"]}}
               .dump());
  EXPECT_EQ(detok.body["content"], kPrompt);
  // A stream carries the same text as the whole response, then the finish reason, the usage
  // and [DONE].
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Who is Mr. Darcy?"}}}},
                     {"max_tokens", 20},
                     {"temperature", 0}};
  const Reply whole = post(s, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(whole.status, 200) << whole.body.dump();
  EXPECT_EQ(whole.body["object"], "chat.completion");
  EXPECT_EQ(whole.body["choices"][0]["message"]["role"], "assistant");
  json streamed = chat;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const std::vector<std::string> events = stream(s, "/v1/chat/completions", streamed);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 3 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (i == 0) {
      EXPECT_EQ(e["choices"][0]["delta"]["role"], "assistant");
    }
    text += e["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, whole.body["choices"][0]["message"]["content"]);
  EXPECT_EQ(json::parse(events[events.size() - 3])["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["completion_tokens"], 20);
  // A second turn of the same chat reuses the slot's cache.
  json next = chat;
  next["messages"].push_back(whole.body["choices"][0]["message"]);
  next["messages"].push_back({{"role", "user"}, {"content", "And Elizabeth?"}});
  const Reply turn = post(s, "/v1/chat/completions", next.dump());
  ASSERT_EQ(turn.status, 200);
  EXPECT_GT(turn.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 20);
  // Stop strings end the text before them.
  const std::string stop = want.substr(6, 4);
  const Reply stopped = post(s, "/v1/completions", completion(24, {{"stop", {stop}}}).dump());
  EXPECT_EQ(stopped.body["choices"][0]["text"], want.substr(0, want.find(stop)));
  EXPECT_EQ(stopped.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(s.stop(), 0);
}

// OpenAI's frequency and presence penalties (and llama-server's repeat_last_n) give the CLI's
// generation with the same flags, which the penalties change.
TEST(Serve, PenaltiesMatchGenerate) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1"});
  ASSERT_GT(s.port(), 0);
  const std::string plain = cli_generate(dir, {}, 32);
  const std::string want = cli_generate(
      dir, {"--frequency-penalty", "0.5", "--presence-penalty", "0.25", "--repeat-last-n", "16"},
      32);
  EXPECT_NE(want, plain);
  const Reply c =
      post(s, "/v1/completions",
           completion(
               32, {{"frequency_penalty", 0.5}, {"presence_penalty", 0.25}, {"repeat_last_n", 16}})
               .dump());
  ASSERT_EQ(c.status, 200) << c.body.dump();
  EXPECT_EQ(c.body["choices"][0]["text"], want);

  // OpenAI's logit_bias (and llama-server's array form, false banning a token) against the
  // CLI's --logit-bias: the greedy text's first token banned, another token favoured.
  const json first = post(s, "/tokenize", json{{"content", plain}}.dump()).body["tokens"][0];
  const std::string id = std::to_string(first.get<int>());
  const std::string biased =
      cli_generate(dir, {"--logit-bias", id + "-inf", "--logit-bias", "300+1.5"}, 16);
  EXPECT_NE(biased.substr(0, 4), plain.substr(0, 4));
  for (const json& bias :
       {json{{id, -100}, {"300", 1.5}}, json::array({{first, false}, {300, 1.5}})}) {
    const Reply b = post(s, "/v1/completions", completion(16, {{"logit_bias", bias}}).dump());
    ASSERT_EQ(b.status, 200) << b.body.dump();
    EXPECT_EQ(b.body["choices"][0]["text"], biased) << bias.dump();
  }
  EXPECT_EQ(s.stop(), 0);
}

// logprobs: each generated token's log-softmax under the model, computed here from the
// library's logits of the same tokens (greedy: the chosen token is the likeliest), with the
// likeliest tokens', in OpenAI's completion and chat shapes, whole and streamed, and cut where
// a stop string cuts the text.
TEST(Serve, LogprobsAreTheModelsLogSoftmax) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1"});
  ASSERT_GT(s.port(), 0);
  const int n = 10;
  const Reply c = post(s, "/v1/completions", completion(n, {{"logprobs", 3}}).dump());
  ASSERT_EQ(c.status, 200) << c.body.dump();
  const json& lp = c.body["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), size_t(n)) << lp.dump();

  // The reference: the model's logits through the library, token by token.
  trit::ModelOptions mo;
  mo.device = "cpu";
  trit::Model model = trit::Model::open(kModel, mo);
  trit::Session session(model);
  const json prompt =
      post(s, "/tokenize", json{{"content", kPrompt}, {"add_special", true}}.dump()).body["tokens"];
  std::vector<float> logits = session.eval(prompt.get<std::vector<int32_t>>());
  int64_t offset = 0;
  std::string text;
  for (int i = 0; i < n; ++i) {
    std::vector<std::pair<double, int32_t>> ranked;
    double max_l = -1e300, sum = 0;
    for (float l : logits) max_l = std::max(max_l, double(l));
    for (size_t t = 0; t < logits.size(); ++t) {
      sum += std::exp(double(logits[t]) - max_l);
      ranked.emplace_back(double(logits[t]), int32_t(t));
    }
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    const double log_z = max_l + std::log(sum);
    const int32_t best = ranked[0].second;
    const std::string piece = model.token_text(best);
    EXPECT_EQ(lp["tokens"][i], piece) << i;
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), ranked[0].first - log_z, 1e-4) << i;
    EXPECT_EQ(lp["text_offset"][i], offset) << i;
    const json& top = lp["top_logprobs"][i];
    ASSERT_EQ(top.size(), 3u) << i;
    for (int k = 0; k < 3; ++k) {
      const std::string tk = model.token_text(ranked[size_t(k)].second);
      ASSERT_TRUE(top.contains(tk)) << i << " " << top.dump();
      EXPECT_NEAR(top[tk].get<double>(), ranked[size_t(k)].first - log_z, 1e-4);
    }
    offset += int64_t(piece.size());
    text += piece;
    logits = session.eval(std::vector<int32_t>{best});
  }
  EXPECT_EQ(c.body["choices"][0]["text"], text);

  // A stop string cuts the tokens after the one it begins in.
  const std::string stop = text.substr(text.size() / 2, 2);
  const Reply cut =
      post(s, "/v1/completions", completion(n, {{"logprobs", 0}, {"stop", {stop}}}).dump());
  ASSERT_EQ(cut.status, 200);
  const std::string kept = cut.body["choices"][0]["text"];
  const json& offs = cut.body["choices"][0]["logprobs"]["text_offset"];
  ASSERT_FALSE(offs.empty());
  EXPECT_LT(offs.back().get<int64_t>(), int64_t(kept.size()));
  EXPECT_LT(offs.size(), size_t(n));
  EXPECT_EQ(cut.body["choices"][0]["logprobs"]["top_logprobs"][0].size(), 0u);

  // Chat: whole and streamed give the same entries, whose bytes are the reply's text.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Who is Mr. Darcy?"}}}},
                     {"max_tokens", 12},
                     {"temperature", 0},
                     {"logprobs", true},
                     {"top_logprobs", 2}};
  const Reply whole = post(s, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(whole.status, 200) << whole.body.dump();
  const json& entries = whole.body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(entries.size(), 12u);
  std::string bytes;
  for (const json& e : entries) {
    for (int b : e["bytes"]) bytes.push_back(char(b));
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_EQ(e["top_logprobs"][0]["token"], e["token"]);  // greedy: the likeliest
    EXPECT_EQ(e["top_logprobs"][0]["logprob"], e["logprob"]);
    EXPECT_LE(e["top_logprobs"][1]["logprob"].get<double>(), e["logprob"].get<double>());
  }
  EXPECT_EQ(bytes, whole.body["choices"][0]["message"]["content"]);
  json streamed = chat;
  streamed["stream"] = true;
  json got = json::array();
  for (const std::string& e : stream(s, "/v1/chat/completions", streamed)) {
    if (e == "[DONE]") break;
    const json event = json::parse(e);
    for (const json& x : event["choices"][0]["logprobs"]["content"]) got.push_back(x);
  }
  EXPECT_EQ(got, entries);
  // Without logprobs asked, none are computed or sent.
  EXPECT_TRUE(
      post(s, "/v1/completions", completion(2).dump()).body["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(s.stop(), 0);
}

TEST(Serve, AdaptersPerRequestMatchGenerateWithLora) {
  TempDir dir;
  const std::string adapter = random_adapter_file(dir);
  // JSON text is UTF-8: the server sends U+FFFD where the model wrote an invalid byte, where
  // the CLI prints the byte itself.
  auto as_json = [](const std::string& raw) {
    return json::parse(json(raw).dump(-1, ' ', false, json::error_handler_t::replace))
        .get<std::string>();
  };
  const std::string plain = as_json(cli_generate(dir, {}, 16));
  const std::string adapted = as_json(cli_generate(dir, {"--lora", adapter}, 16));
  const std::string half = as_json(cli_generate(dir, {"--lora", adapter + ":0.5"}, 16));
  ASSERT_NE(plain, adapted);
  ASSERT_NE(adapted, half);
  ServerProcess s(
      dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--parallel", "4", "--lora", adapter});
  const Reply list = get(s, "/lora-adapters");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body, json::parse("[{\"id\": 0, \"path\": \"" + adapter + "\", \"scale\": 1.0}]"));
  // Concurrent requests with different adapters share the batch; each gets its own output.
  struct Case {
    json lora;
    std::string want;
  };
  const std::vector<Case> cases = {{json::array({{{"id", 0}, {"scale", 1.0}}}), adapted},
                                   {json::array(), plain},
                                   {json::array({{{"id", 0}, {"scale", 0.5}}}), half},
                                   {json(), adapted}};  // no "lora": the global scales
  std::vector<std::string> got(cases.size() * 2);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < got.size(); ++i) {
    clients.emplace_back([&, i] {
      const Case& c = cases[i % cases.size()];
      json body = completion(16);
      if (!c.lora.is_null()) body["lora"] = c.lora;
      const Reply r = post(s, "/v1/completions", body.dump());
      got[i] = r.status == 200 ? r.body["choices"][0]["text"].get<std::string>() : r.body.dump();
    });
  }
  for (std::thread& t : clients) t.join();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], cases[i % cases.size()].want) << i;
  // Global scales: unlisted adapters go to 0.
  const Reply set = post(s, "/lora-adapters", "[]");
  ASSERT_EQ(set.status, 200);
  EXPECT_EQ(set.body[0]["scale"], 0.0);
  EXPECT_EQ(post(s, "/v1/completions", completion(16).dump()).body["choices"][0]["text"], plain);
  post(s, "/lora-adapters", R"([{"id": 0, "scale": 0.5}])");
  EXPECT_EQ(post(s, "/v1/completions", completion(16).dump()).body["choices"][0]["text"], half);
  // A scale beyond a float's range is refused (its conversion was undefined), the scales kept.
  const Reply huge = post(s, "/lora-adapters", R"([{"id": 0, "scale": 1e300}])");
  EXPECT_EQ(huge.status, 400);
  EXPECT_NE(huge.body.dump().find("within a float's range"), std::string::npos) << huge.body.dump();
  EXPECT_EQ(get(s, "/lora-adapters").body[0]["scale"], 0.5);
}

// -b/--batch-size: a prompt computed 3 tokens a step (over several steps, beside the decoding
// rows) gives the CLI's greedy generation; a negative size is refused naming the flag.
TEST(Serve, PromptsInSmallChunksGiveTheSameText) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--parallel", "2", "-b", "3"});
  ASSERT_GT(s.port(), 0);
  const std::string want = cli_generate(dir, {}, 16);
  const Reply c = post(s, "/v1/completions", completion(16).dump());
  ASSERT_EQ(c.status, 200) << c.body.dump();
  EXPECT_EQ(c.body["choices"][0]["text"], want);
  const RunResult r = run_trit(
      dir, {"serve", "-m", kModel, "--device", "cpu", "--port", "0", "--batch-size", "-1"});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("n_batch must be positive (or 0: automatic), got -1 (--batch)"),
            std::string::npos)
      << r.err;
}

TEST(Serve, ClientThatHangsUpFreesItsSlotAndAFullQueueGets503) {
  TempDir dir;
  // A slot of 8192 tokens: the request the impatient client leaves below would run for seconds.
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--parallel", "1", "--queue",
                        "1", "-c", "8192"});
  const json endless = completion(-1, {{"stream", true}, {"ignore_eos", true}});
  std::atomic<bool> hang_up{false};
  std::atomic<size_t> seen{0};
  std::thread streaming([&] {
    stream(s, "/v1/completions", endless, [&](size_t n) {
      seen = n;
      return !hang_up;
    });
  });
  while (seen < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::thread queued([&] {
    const Reply r = post(s, "/v1/completions", completion(4).dump());
    EXPECT_EQ(r.status, 200) << r.body.dump();
  });
  for (int i = 0; i < 1000 && get(s, "/health").body["requests_queued"] != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const Reply busy = post(s, "/v1/completions", completion(4).dump());
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.retry_after, "1");
  EXPECT_EQ(busy.body["error"]["type"], "unavailable_error");
  // The streaming client goes away: its slot serves the queued request at once.
  hang_up = true;
  streaming.join();
  queued.join();
  for (int i = 0; i < 400 && get(s, "/health").body["slots_processing"] != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(get(s, "/health").body["slots_processing"], 0);
  EXPECT_NE(s.log().find("POST /v1/completions 503"), std::string::npos);
  // A client of a whole (not streamed) response that gives up frees the slot too.
  {
    httplib::Client impatient("127.0.0.1", s.port());
    impatient.set_read_timeout(0, 300000);  // 0.3 s
    EXPECT_FALSE(impatient.Post("/v1/completions", completion(-1, {{"ignore_eos", true}}).dump(),
                                "application/json"));
  }
  for (int i = 0; i < 400 && get(s, "/health").body["slots_processing"] != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(get(s, "/health").body["slots_processing"], 0);
}

TEST(Serve, BadRequestsGetOpenAiErrorsAndTheServerKeepsServing) {
  TempDir dir;
  const std::string adapter = random_adapter_file(dir);
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "-c", "64", "--max-body-mb",
                        "1", "--lora", adapter});
  struct Bad {
    std::string path, body;
    int status;
    std::string names;  // what the message must name
  };
  const std::string long_prompt(400, 'a');
  const std::vector<Bad> corpus = {
      {"/v1/completions", "{bad json", 400, "not valid JSON"},
      {"/v1/completions", "[1, 2]", 400, "JSON object"},
      {"/v1/completions", "{}", 400, "'prompt' is required"},
      {"/v1/completions", R"({"prompt": 5})", 400, "'prompt'"},
      {"/v1/completions", R"({"prompt": [1, "a"]})", 400, "'prompt'"},
      {"/v1/completions", R"({"prompt": [1, 99999]})", 400, "99999"},
      {"/v1/completions", R"({"prompt": "x", "temperature": "hot"})", 400, "'temperature'"},
      {"/v1/completions", R"({"prompt": "x", "top_p": 2})", 400, "'top_p'"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": -5})", 400, "'max_tokens'"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": 1.5})", 400, "'max_tokens'"},
      {"/v1/completions", R"({"prompt": "x", "n": 2})", 400, "'n'"},
      {"/v1/completions", R"({"prompt": "x", "stop": ["a","b","c","d","e"]})", 400, "'stop'"},
      {"/v1/completions", R"({"prompt": "x", "stream": "yes"})", 400, "'stream'"},
      {"/v1/completions", R"({"prompt": "x", "lora": [{"id": 3}]})", 400, "id 3"},
      {"/v1/completions", R"({"prompt": "x", "lora": {"id": 0}})", 400, "'lora'"},
      {"/v1/completions", R"({"prompt": "x", "logprobs": 6})", 400, "'logprobs'"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", 400,
       "'top_logprobs' needs"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})",
       400, "'top_logprobs'"},
      {"/v1/completions", R"({"prompt": "x", "frequency_penalty": 3})", 400, "'frequency_penalty'"},
      {"/v1/completions", R"({"prompt": "x", "presence_penalty": "a"})", 400, "'presence_penalty'"},
      {"/v1/completions", R"({"prompt": "x", "repeat_last_n": -2})", 400, "'repeat_last_n'"},
      {"/v1/completions", R"({"prompt": "x", "logit_bias": {"99999": 1}})", 400, "99999"},
      {"/v1/completions", R"({"prompt": "x", "logit_bias": {"ab": 1}})", 400, "'logit_bias'"},
      {"/v1/completions", R"({"prompt": "x", "logit_bias": {"5": 101}})", 400, "between -100"},
      {"/v1/completions", R"({"prompt": "x", "logit_bias": [[5]]})", 400, "[token id, bias]"},
      {"/v1/completions", R"({"prompt": "x", "logit_bias": 3})", 400, "'logit_bias'"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
           "function": {"name": "f"}}]})",
       400, "'tools' is not supported"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", 400,
       "'tool_choice'"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type":
           "json_object"}})",
       400, "'response_format'"},
      {"/v1/completions", R"({"prompt": "x", "echo": true})", 400, "'echo'"},
      {"/v1/completions", R"({"prompt": "x", "suffix": "y"})", 400, "'suffix'"},
      {"/v1/completions", R"({"prompt": "x", "best_of": 2})", 400, "'best_of'"},
      {"/v1/completions", json{{"prompt", long_prompt}}.dump(), 400, "-c"},
      {"/v1/chat/completions", R"({"messages": []})", 400, "'messages'"},
      {"/v1/chat/completions", R"({"messages": [{"role": "king", "content": "x"}]})", 400,
       "messages[0].role"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 7}]})", 400,
       "messages[0].content"},
      {"/tokenize", R"({"text": "x"})", 400, "'content'"},
      {"/detokenize", R"({"tokens": [-1]})", 400, "'tokens'"},
      {"/detokenize", R"({"tokens": [18446744073709551615]})", 400, "'tokens'"},
      {"/lora-adapters", R"([{"id": 9, "scale": 1}])", 400, "id 9"},
      {"/lora-adapters", R"({"id": 0})", 400, "array"},
      {"/v1/nothing", "{}", 404, "no endpoint POST /v1/nothing"},
      {"/v1/completions", std::string(2 << 20, ' '), 413, "limit of 1048576 bytes"},
  };
  for (const Bad& b : corpus) {
    const Reply r = post(s, b.path, b.body);
    EXPECT_EQ(r.status, b.status) << b.path << " " << b.body.substr(0, 80);
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << b.body.substr(0, 80);
    const json& e = r.body["error"];
    EXPECT_NE(e["message"].get<std::string>().find(b.names), std::string::npos)
        << e["message"] << " should name " << b.names;
    EXPECT_EQ(e["type"], b.status == 401 ? "authentication_error" : "invalid_request_error");
    EXPECT_EQ(e["code"], b.status);
  }
  EXPECT_EQ(post(s, "/v1/completions", completion(2).dump()).status, 200);
  // Those fields' "off" values are accepted.
  const Reply off = post(s, "/v1/chat/completions",
                         json{{"messages", {{{"role", "user"}, {"content", "x"}}}},
                              {"max_tokens", 2},
                              {"tools", json::array()},
                              {"tool_choice", "none"},
                              {"response_format", {{"type", "text"}}}}
                             .dump());
  EXPECT_EQ(off.status, 200) << off.body.dump();
  const Reply plain_off =
      post(s, "/v1/completions",
           completion(2, {{"echo", false}, {"suffix", ""}, {"best_of", 1}}).dump());
  EXPECT_EQ(plain_off.status, 200) << plain_off.body.dump();
  EXPECT_EQ(get(s, "/health").body["status"], "ok");
}

// `trit bench --serve N --serve-url` loads another server (here a `trit serve` process) with N
// streaming clients after an untimed round of the same count.
TEST(Serve, BenchLoadsAnotherServerByUrl) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "-P", "2"});
  const RunResult r =
      run_trit(dir, {"bench", "-m", kModel, "--device", "cpu", "-t", "1", "--serve", "1,2", "-p",
                     "4", "-n", "3", "--json", "--serve-url", s.url()});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::vector<json> runs;
  while (std::getline(lines, line)) runs.push_back(json::parse(line));
  ASSERT_EQ(runs.size(), 2u) << r.out;
  EXPECT_EQ(runs[0]["streams"], 1);
  EXPECT_EQ(runs[1]["streams"], 2);
  for (const json& j : runs) EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0) << j;
  // Warm-up and timed rounds: 1 + 1 + 2 + 2 completions reached the server (each logged once
  // its last byte is out, which can be just after the client has it).
  EXPECT_EQ(s.wait_in_log("POST /v1/completions 200", 6), 6u) << s.log();
  expect_one_line_error(run_trit(dir, {"bench", "-m", kModel, "--device", "cpu", "--serve", "1",
                                       "--serve-url", "x:"}),
                        "--serve-url");
}

TEST(Serve, ApiKeyIsCheckedAndOtherMachinesNeedOne) {
  TempDir dir;
  {
    ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--api-key", "s3cret"});
    EXPECT_EQ(get(s, "/health").status, 200);  // open, for load balancers and probes
    const Reply none = get(s, "/v1/models");
    EXPECT_EQ(none.status, 401);
    EXPECT_EQ(none.body["error"]["type"], "authentication_error");
    EXPECT_EQ(get(s, "/v1/models", {{"Authorization", "Bearer s3cret!"}}).status, 401);
    EXPECT_EQ(get(s, "/v1/models", {{"Authorization", "Bearer s3cre"}}).status, 401);
    EXPECT_EQ(get(s, "/v1/models", {{"Authorization", "s3cret"}}).status, 401);
    EXPECT_EQ(get(s, "/v1/models", {{"Authorization", "Bearer s3cret"}}).status, 200);
    EXPECT_EQ(
        post(s, "/v1/completions", completion(2).dump(), {{"Authorization", "Bearer x"}}).status,
        401);
  }
  const RunResult open =
      run_trit(dir, {"serve", "-m", kModel, "--device", "cpu", "--host", "0.0.0.0", "--port", "0"});
  EXPECT_NE(open.rc, 0);
  expect_one_line_error(open, "--api-key");
}

TEST(Serve, SigtermEndsRunningStreamsAndExitsCleanly) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1"});
  std::atomic<size_t> seen{0};
  std::vector<std::string> events;
  std::thread client([&] {
    events = stream(s, "/v1/completions", completion(-1, {{"stream", true}, {"ignore_eos", true}}),
                    [&](size_t n) {
                      seen = n;
                      return true;
                    });
  });
  while (seen < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(s.stop(SIGTERM), 0);
  client.join();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_NE(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], nullptr);
  EXPECT_NE(s.log().find("stopped"), std::string::npos);
}

// Resident memory after many requests stays where it was after the first few. Under the address
// sanitizer, freed memory is held back in a quarantine (256 MiB by default), which would read as
// growth: the server runs with none.
TEST(Serve, MemoryStaysFlatAcrossManyRequests) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--quiet"},
                  "detect_leaks=0:quarantine_size_mb=0:thread_local_quarantine_size_kb=0");
  auto rss_kib = [&] {
    const std::string pid = get(s, "/health").status == 200 ? std::to_string(s.pid()) : "";
    std::ifstream f("/proc/" + pid + "/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return 0L;
  };
  auto burst = [&](int n) {
    for (int i = 0; i < n; ++i) {
      json body = completion(3, {{"prompt", kPrompt + " " + std::to_string(i)}});
      if (i % 2) body["stream"] = true;
      if (i % 2) {
        stream(s, "/v1/completions", body);
      } else {
        EXPECT_EQ(post(s, "/v1/completions", body.dump()).status, 200);
      }
    }
  };
  burst(80);  // allocators settle over the first tens of requests (more slowly under the sanitizer)
  const long before = rss_kib();
  burst(120);
  const long after = rss_kib();
  EXPECT_GT(before, 0);
#ifdef TRIT_SANITIZED_BINARY
  const long limit_kib = 16 * 1024;  // the sanitizer's allocator keeps growing its size classes
#else
  const long limit_kib = 4 * 1024;
#endif
  // 120 requests: a leak of 140 KiB a request (34 without the sanitizer) would show.
  EXPECT_LT(after - before, limit_kib) << "RSS grew from " << before << " KiB to " << after;
}

// The server on the Vulkan backend (lavapipe in CI): concurrent requests, with and without an
// adapter, each as `trit generate --device vulkan` writes it.
TEST(VulkanServe, ConcurrentRequestsMatchGenerate) {
  TempDir dir;
  const RunResult probe = run_trit(dir, {"devices"});
  if (probe.out.find("vulkan") == std::string::npos && !std::getenv("TRIT_REQUIRE_VULKAN")) {
    GTEST_SKIP() << "no Vulkan device";
  }
  const std::string adapter = random_adapter_file(dir);
  auto as_json = [](const std::string& raw) {
    return json::parse(json(raw).dump(-1, ' ', false, json::error_handler_t::replace))
        .get<std::string>();
  };
  const std::string plain = as_json(cli_generate(dir, {"--device", "vulkan"}, 6));
  const std::string adapted =
      as_json(cli_generate(dir, {"--device", "vulkan", "--lora", adapter}, 6));
  ServerProcess s(dir, {"-m", kModel, "--device", "vulkan", "--parallel", "2", "--lora", adapter});
  std::string got_plain, got_adapted;
  std::thread a([&] {
    got_plain = post(s, "/v1/completions", completion(6, {{"lora", json::array()}}).dump())
                    .body["choices"][0]["text"];
  });
  std::thread b([&] {
    got_adapted = post(s, "/v1/completions", completion(6).dump()).body["choices"][0]["text"];
  });
  a.join();
  b.join();
  EXPECT_EQ(got_plain, plain);
  EXPECT_EQ(got_adapted, adapted);
}

// The official openai npm package (tests/serve/openai_client, installed by tools/setup.sh with
// npm ci) drives a streamed chat, a whole one and a completion; its completion is the CLI's.
TEST(Serve, TheOpenAiNpmClientChatsStreamsAndCompletes) {
  const std::string client = std::string(TRIT_TEST_DATA) + "/../serve/openai_client";
  ASSERT_TRUE(std::filesystem::exists(client + "/node_modules/openai"))
      << "the openai package is missing: run tools/setup.sh (npm ci in " << client << ")";
  TempDir dir;
  const std::string want = cli_generate(dir, {}, 16);
  ServerProcess s(dir, {"-m", kModel, "--device", "cpu", "-t", "1", "--api-key", "k-123"});
  const ShellResult r = run_shell("node " + shell_quote(client + "/client_test.mjs") + " " +
                                  shell_quote(s.url() + "/v1") + " k-123 " + shell_quote(kPrompt));
  ASSERT_EQ(r.rc, 0) << r.output;
  const json got = json::parse(r.output.substr(r.output.rfind('{')));
  EXPECT_EQ(got["model"], "austen-tiny.gguf");
  EXPECT_EQ(got["completion"], want);
  EXPECT_FALSE(got["chat"].get<std::string>().empty());
}

}  // namespace
}  // namespace trit::engine::test
