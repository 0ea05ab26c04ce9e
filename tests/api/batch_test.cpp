// trit::BatchGenerator (continuous batching) as a server drives it: a worker thread stepping,
// requests submitted from others. Each request's tokens equal those a Session alone generates
// with the same prompt, adapters and sampling; a continued prompt reuses a slot's cache;
// cancellation frees the slot; bad requests are refused when submitted.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "support/api_models.h"
#include "trit/trit.hpp"

namespace trit::api_test {
namespace {

// Runs gen.step() on a thread of its own until stopped.
class Worker {
 public:
  explicit Worker(BatchGenerator& gen)
      : gen_(gen), thread_([this] {
          while (!stop_) {
            if (!gen_.step()) gen_.wait_for_work(10);
          }
        }) {}
  ~Worker() {
    stop_ = true;
    thread_.join();
  }

 private:
  BatchGenerator& gen_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The results of requests, as they arrive.
struct Results {
  std::mutex mutex;
  std::condition_variable cv;
  std::map<int, GenerateResult> done;
  std::function<void(const GenerateResult&)> on_done(int key) {
    return [this, key](const GenerateResult& r) {
      std::lock_guard<std::mutex> lock(mutex);
      done[key] = r;
      cv.notify_all();
    };
  }
  void wait_for(size_t n) {
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return done.size() >= n; }))
        << done.size() << " of " << n << " requests ended";
  }
};

TEST(ApiBatch, EveryRequestGetsTheTokensASessionGetsAlone) {
  Model m = Model::open(tiny_model(), cpu());
  const Adapter a = m.load_adapter(tiny_adapter());
  struct Case {
    std::vector<int32_t> prompt;
    std::vector<AdapterScale> adapters;
    int64_t max_tokens;
  };
  const std::vector<Case> cases = {
      {{256, 72, 101, 108, 108, 111}, {}, 12},
      {{256, 84, 104, 101}, {{a, 1.0f}}, 9},
      {{256, 65, 32, 108, 111, 110, 103, 101, 114, 32, 111, 110, 101}, {{a, 0.5f}}, 7},
      {{256, 72, 101, 108, 108, 111}, {{a, 1.0f}}, 12},
      {{256, 90}, {{a, 0.0f}}, 15},  // scale 0: no adapter
  };
  std::vector<GenerateResult> alone;
  for (const Case& c : cases) {
    Session s(m, {64, 64});
    GenerateOptions g = greedy(c.max_tokens);
    g.ignore_eos = true;
    g.adapters = c.adapters;
    g.logprobs = 2;
    alone.push_back(s.generate(c.prompt, g));
    // Each token's log-probability, the likeliest tokens' beside it (greedy: itself first).
    const GenerateResult& r = alone.back();
    ASSERT_EQ(r.logprobs.size(), r.tokens.size());
    for (size_t k = 0; k < r.tokens.size(); ++k) {
      const TokenLogprob& t = r.logprobs[k];
      EXPECT_EQ(t.token, r.tokens[k]);
      ASSERT_EQ(t.top.size(), 2u);
      EXPECT_EQ(t.top[0].first, t.token);
      EXPECT_EQ(t.top[0].second, t.logprob);
      EXPECT_LE(t.top[1].second, t.top[0].second);
      EXPECT_LE(t.logprob, 0.0f);
    }
  }
  BatchGenerator gen(m, {.n_slots = 3, .n_ctx = 64, .n_batch = 8});
  EXPECT_EQ(gen.n_ctx(), 64);
  Results results;
  {
    Worker worker(gen);
    for (size_t i = 0; i < cases.size(); ++i) {
      GenerateOptions g = greedy(cases[i].max_tokens);
      g.ignore_eos = true;
      g.adapters = cases[i].adapters;
      g.logprobs = 2;
      gen.submit({cases[i].prompt, g, results.on_done(int(i))});
    }
    results.wait_for(cases.size());
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const GenerateResult& r = results.done[int(i)];
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.tokens, alone[i].tokens) << "request " << i;
    ASSERT_EQ(r.logprobs.size(), alone[i].logprobs.size());
    for (size_t k = 0; k < r.logprobs.size(); ++k) {
      EXPECT_NEAR(r.logprobs[k].logprob, alone[i].logprobs[k].logprob, 1e-5) << i << " " << k;
      EXPECT_EQ(r.logprobs[k].top[1].first, alone[i].logprobs[k].top[1].first) << i << " " << k;
    }
    EXPECT_EQ(r.stop_reason, StopReason::MaxTokens);
    EXPECT_EQ(r.n_prompt, int64_t(cases[i].prompt.size()));
    EXPECT_EQ(r.n_generated, cases[i].max_tokens);
  }
  EXPECT_EQ(gen.status().active, 0);
  EXPECT_EQ(gen.status().queued, 0);
}

TEST(ApiBatch, StreamsTextAndStopsAtStopStrings) {
  Model m = Model::open(kShipped, cpu());
  const std::vector<int32_t> prompt = m.tokenize("It is a truth universally acknowledged");
  Session s(m);
  const GenerateResult full = s.generate(prompt, greedy(40));
  ASSERT_GT(full.text.size(), 12u);
  const std::string stop = full.text.substr(8, 3);
  BatchGenerator gen(m, {.n_slots = 2});
  Results results;
  std::string streamed;
  {
    Worker worker(gen);
    GenerateOptions g = greedy(40);
    g.stop = {stop};
    g.on_text = [&](std::string_view piece) {
      streamed += piece;
      return true;
    };
    gen.submit({prompt, g, results.on_done(0)});
    gen.submit({prompt, greedy(40), results.on_done(1)});
    results.wait_for(2);
  }
  const GenerateResult& r = results.done[0];
  EXPECT_EQ(r.stop_reason, StopReason::StopString);
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(results.done[1].text, full.text);
}

TEST(ApiBatch, AContinuedPromptReusesTheSlotsCache) {
  Model m = Model::open(tiny_model(), cpu());
  BatchGenerator gen(m, {.n_slots = 2, .n_ctx = 64});
  Results results;
  const std::vector<int32_t> first = {256, 72, 101, 108, 108, 111};
  GenerateOptions g = greedy(5);
  g.ignore_eos = true;
  Worker worker(gen);
  gen.submit({first, g, results.on_done(0)});
  results.wait_for(1);
  // The conversation goes on: the first prompt, its reply and a new turn.
  std::vector<int32_t> next = first;
  const std::vector<int32_t>& reply = results.done[0].tokens;
  next.insert(next.end(), reply.begin(), reply.end());
  next.insert(next.end(), {10, 65, 66});
  gen.submit({next, g, results.on_done(1)});
  results.wait_for(2);
  // Every token the first request fed is reused (its last sampled token was never fed).
  EXPECT_EQ(results.done[1].n_cached, int64_t(first.size() + reply.size() - 1));
  Session s(m, {64, 64});
  EXPECT_EQ(results.done[1].tokens, s.generate(next, g).tokens);
}

TEST(ApiBatch, CancelEndsARequestAndFreesItsSlot) {
  Model m = Model::open(tiny_model(), cpu());
  BatchGenerator gen(m, {.n_slots = 1, .n_ctx = 256});
  Results results;
  Worker worker(gen);
  GenerateOptions endless = greedy(-1);
  endless.ignore_eos = true;
  std::atomic<int> pieces{0};
  endless.on_text = [&](std::string_view) {
    ++pieces;
    return true;
  };
  const uint64_t long_id = gen.submit({{256, 65}, endless, results.on_done(0)});
  const uint64_t queued_id = gen.submit({{256, 66}, endless, results.on_done(1)});
  GenerateOptions short_one = greedy(3);
  short_one.ignore_eos = true;
  gen.submit({{256, 67}, short_one, results.on_done(2)});
  while (pieces < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(gen.status().queued, 2);
  gen.cancel(queued_id);  // still queued: ends without a slot
  gen.cancel(long_id);
  results.wait_for(3);
  EXPECT_EQ(results.done[0].stop_reason, StopReason::Cancelled);
  EXPECT_GE(results.done[0].n_generated, 3);
  EXPECT_EQ(results.done[1].stop_reason, StopReason::Cancelled);
  EXPECT_EQ(results.done[1].n_generated, 0);
  EXPECT_EQ(results.done[2].stop_reason, StopReason::MaxTokens);
  EXPECT_EQ(results.done[2].n_generated, 3);
  EXPECT_GT(results.done[2].queue_seconds, 0.0);
  gen.cancel(long_id);  // finished: ignored
  gen.cancel(12345);    // unknown: ignored
}

TEST(ApiBatch, BadRequestsAreRefusedWhenSubmitted) {
  Model m = Model::open(tiny_model(), cpu());
  Model other = Model::open(tiny_model(), cpu());
  const Adapter foreign = other.load_adapter(tiny_adapter());
  BatchGenerator gen(m, {.n_slots = 1, .n_ctx = 8});
  auto error = [&](BatchRequest r) {
    try {
      gen.submit(std::move(r));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error({{}, greedy(1), nullptr}).find("the prompt is empty"), std::string::npos);
  EXPECT_NE(error({std::vector<int32_t>(8, 65), greedy(1), nullptr}).find("context of 8"),
            std::string::npos);
  EXPECT_NE(error({{1, 999999}, greedy(1), nullptr}).find("999999"), std::string::npos);
  GenerateOptions g = greedy(1);
  g.adapters = {{foreign, 1.0f}};
  EXPECT_NE(error({{256, 65}, g, nullptr}).find("another model"), std::string::npos);
  EXPECT_EQ(gen.status().queued, 0);
  try {
    BatchGenerator bad(m, {.n_slots = 0});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.option(), "n_slots");
  }
}

}  // namespace
}  // namespace trit::api_test
