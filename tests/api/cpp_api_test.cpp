// The public C++ API (include/trit/), called as an app would: every function, its errors, and
// cancellation from another thread. Results are checked against independent computations: the
// logits of Model::logits, a fresh session, another file holding the same numbers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "support/api_models.h"
#include "support/files.h"
#include "trit/trit.hpp"

namespace trit::api_test {
namespace {

using engine::test::read_file;
using engine::test::TempDir;

// The message of the trit::Error fn throws ("" when it throws nothing).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The options field the trit::Error fn throws names ("-" when it throws nothing).
template <class Fn>
std::string option_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.option();
  }
  return "-";
}

std::vector<float> last_row(const std::vector<float>& all, int64_t n_vocab) {
  return std::vector<float>(all.end() - n_vocab, all.end());
}

// ---- Model ----

TEST(ApiModel, OpensAndDescribesTheModel) {
  Model m = Model::open(kShipped, cpu());
  const ModelInfo& i = m.info();
  EXPECT_EQ(i.path, kShipped);
  EXPECT_EQ(i.arch, "bitnet");
  EXPECT_EQ(i.n_layer, 8);
  EXPECT_EQ(i.n_embd, 512);
  EXPECT_EQ(i.n_vocab, 4096);
  EXPECT_TRUE(i.has_tokenizer);
  EXPECT_FALSE(i.has_embedded_adapter);
  EXPECT_EQ(m.device().rfind("cpu: ", 0), 0u) << m.device();
  EXPECT_TRUE(m.device_fallback().empty());
}

TEST(ApiModel, OpenErrorsNameTheProblem) {
  EXPECT_NE(error_of([] { Model::open("/nonexistent/m.gguf", cpu()); }).find("/nonexistent/m.gguf"),
            std::string::npos);
  ModelOptions bad = cpu();
  bad.device = "gpu:7";
  EXPECT_NE(error_of([&] { Model::open(kShipped, bad); }).find("gpu:7"), std::string::npos);
  bad.device = "vulkan:x";
  EXPECT_NE(error_of([&] { Model::open(kShipped, bad); }).find("vulkan:N"), std::string::npos);
  ModelOptions neg = cpu();
  neg.max_buffer_mb = -1;
  EXPECT_NE(error_of([&] { Model::open(kShipped, neg); }).find("max_buffer_mb"), std::string::npos);
  EXPECT_EQ(option_of([&] { Model::open(kShipped, neg); }), "max_buffer_mb");
  ModelOptions q4 = cpu();
  q4.cache_type = "q4_0";
  EXPECT_NE(error_of([&] { Model::open(kShipped, q4); }).find("'q4_0', expected f32 or f16"),
            std::string::npos);
  EXPECT_EQ(option_of([&] { Model::open(kShipped, q4); }), "cache_type");
  TempDir dir;
  engine::test::write_file(dir.file("junk.gguf"), "not a gguf file at all");
  EXPECT_NE(error_of([&] { Model::open(dir.file("junk.gguf"), cpu()); }).find("junk.gguf"),
            std::string::npos);
}

TEST(ApiModel, TokenizerRoundTrips) {
  Model m = Model::open(kShipped, cpu());
  const std::string text = "It is a truth universally acknowledged";
  const std::vector<int32_t> ids = m.tokenize(text, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(m.detokenize(ids), text);
  std::string pieces;
  for (int32_t id : ids) pieces += m.token_text(id);
  EXPECT_EQ(pieces.substr(pieces.size() - text.size()), text);
  const std::vector<int32_t> with_bos = m.tokenize(text, true);
  if (m.bos() >= 0) {
    EXPECT_EQ(with_bos.size(), ids.size() + (with_bos[0] == m.bos() ? 1 : 0));
  }
  EXPECT_NE(error_of([&] { m.token_text(1 << 30); }).find("out of range"), std::string::npos);
  const int32_t too_big[] = {int32_t(m.info().n_vocab)};
  EXPECT_NE(error_of([&] { m.detokenize(too_big); }).find("out of range"), std::string::npos);
}

TEST(ApiModel, ModelWithoutTokenizerSaysSo) {
  TempDir dir;
  CreateOptions o;
  o.preset = "tiny";
  o.vocab = 200;  // under 259: create writes no tokenizer
  create_model(dir.file("m.gguf"), o);
  Model m = Model::open(dir.file("m.gguf"), cpu());
  EXPECT_FALSE(m.info().has_tokenizer);
  EXPECT_NE(error_of([&] { m.tokenize("x"); }).find("no tokenizer"), std::string::npos);
  const int32_t ids[] = {1, 2, 3};
  EXPECT_EQ(m.logits(ids).size(), 3u * 200);
}

TEST(ApiModel, RendersChats) {
  Model m = Model::open(kShipped, cpu());
  const std::string text = m.render_chat({{"user", "Who is Mr. Darcy?"}}, true, "chatml");
  EXPECT_NE(text.find("Who is Mr. Darcy?"), std::string::npos);
  EXPECT_NE(text.find("<|im_start|>assistant"), std::string::npos);
  EXPECT_NE(error_of([&] {
              m.render_chat({{"user", "x"}}, true, "no-such-template");
            }).find("no-such-template"),
            std::string::npos);
}

// ---- adapters ----

TEST(ApiAdapter, ScaleZeroIsNoAdapterAndScaleOneIsTheAttachedModel) {
  Model m = Model::open(tiny_model(), cpu());
  const Adapter a = m.load_adapter(tiny_adapter());
  EXPECT_EQ(a.path(), tiny_adapter());
  EXPECT_NE(a.summary().find("rank 4"), std::string::npos) << a.summary();
  const int32_t ids[] = {256, 72, 101, 108, 108, 111};
  const std::vector<float> base = m.logits(ids);
  const AdapterScale off[] = {{a, 0.0f}};
  EXPECT_EQ(m.logits(ids, off), base);  // bit for bit: the branch adds exact zeros
  const AdapterScale on[] = {{a, 1.0f}};
  const std::vector<float> adapted = m.logits(ids, on);
  EXPECT_NE(adapted, base);
  // The same adapter stored inside a model file (merge --mode attach) computes the same bits.
  TempDir dir;
  MergeOptions mo;
  mo.adapters = {tiny_adapter()};
  mo.mode = "attach";
  const ToolResult r = merge(tiny_model(), dir.file("attached.gguf"), mo);
  EXPECT_NE(r.summary.find("stored"), std::string::npos) << r.summary;
  Model attached = Model::open(dir.file("attached.gguf"), cpu());
  EXPECT_TRUE(attached.info().has_embedded_adapter);
  EXPECT_EQ(attached.logits(ids), adapted);
}

TEST(ApiAdapter, ErrorsNameTheAdapter) {
  Model m = Model::open(tiny_model(), cpu());
  EXPECT_NE(error_of([&] { m.load_adapter("/nonexistent/a.gguf"); }).find("/nonexistent/a.gguf"),
            std::string::npos);
  // An adapter for another shape.
  Model other = Model::open(kShipped, cpu());
  EXPECT_NE(error_of([&] { other.load_adapter(tiny_adapter()); }).find(tiny_adapter()),
            std::string::npos);
  // An adapter loaded for another Model object.
  Model m2 = Model::open(tiny_model(), cpu());
  const Adapter a2 = m2.load_adapter(tiny_adapter());
  const int32_t ids[] = {1, 2};
  const AdapterScale use[] = {{a2, 1.0f}};
  EXPECT_NE(error_of([&] { m.logits(ids, use); }).find("another model"), std::string::npos);
  const AdapterScale empty[] = {{Adapter(), 1.0f}};
  EXPECT_NE(error_of([&] { m.logits(ids, empty); }).find("empty"), std::string::npos);
  const Adapter a = m.load_adapter(tiny_adapter());
  const AdapterScale nan[] = {{a, NAN}};
  EXPECT_NE(error_of([&] { m.logits(ids, nan); }).find("not finite"), std::string::npos);
}

// ---- sessions ----

TEST(ApiSession, GreedyTokensFollowTheLogits) {
  Model m = Model::open(kShipped, cpu());
  Session s(m);
  const std::vector<int32_t> prompt = m.tokenize("It is a truth universally acknowledged");
  GenerateOptions g = greedy(6);
  g.ignore_eos = true;
  const GenerateResult r = s.generate(prompt, g);
  ASSERT_EQ(r.tokens.size(), 6u);
  EXPECT_EQ(r.stop_reason, StopReason::MaxTokens);
  EXPECT_EQ(r.n_prompt, int64_t(prompt.size()));
  EXPECT_EQ(s.n_past(), int64_t(prompt.size() + 5));  // the last token is not evaluated
  // Each token is the argmax of the logits of everything before it.
  std::vector<int32_t> seq = prompt;
  for (int32_t t : r.tokens) {
    const std::vector<float> row = last_row(m.logits(seq), m.info().n_vocab);
    EXPECT_EQ(t, int32_t(std::max_element(row.begin(), row.end()) - row.begin()));
    seq.push_back(t);
  }
  EXPECT_EQ(r.text, m.detokenize(r.tokens));
}

TEST(ApiSession, StreamsTextAndStopsAtStopStrings) {
  Model m = Model::open(kShipped, cpu());
  const std::string prompt = "It is a truth universally acknowledged";
  Session s(m);
  const GenerateResult full = s.generate(prompt, greedy(40));
  ASSERT_GT(full.text.size(), 20u);
  // A stop string taken from the middle of the unstopped text: the stopped text is what came
  // before its first occurrence, streamed piece by piece.
  const std::string stop = full.text.substr(full.text.size() / 2, 4);
  const size_t at = full.text.find(stop);
  s.reset();
  GenerateOptions g = greedy(40);
  g.stop = {stop, "#never#"};
  std::string streamed;
  g.on_text = [&](std::string_view piece) {
    streamed += piece;
    return true;
  };
  const GenerateResult r = s.generate(prompt, g);
  EXPECT_EQ(r.stop_reason, StopReason::StopString);
  EXPECT_EQ(r.text, full.text.substr(0, at));
  EXPECT_EQ(streamed, r.text);
  EXPECT_STREQ(stop_reason_name(r.stop_reason), "stop");
  // on_text returning false stops generation.
  s.reset();
  GenerateOptions one = greedy(40);
  int calls = 0;
  one.on_text = [&](std::string_view) { return ++calls < 2; };
  const GenerateResult c = s.generate(prompt, one);
  EXPECT_EQ(c.stop_reason, StopReason::Callback);
  EXPECT_EQ(calls, 2);
  EXPECT_LT(c.tokens.size(), full.tokens.size());
}

TEST(ApiSession, ChatReusesTheCacheAndMatchesAFreshSession) {
  Model m = Model::open(kShipped, cpu());
  Session s(m, {512, 64});
  std::vector<ChatMessage> chat = {{"user", "Where does Mr. Bingley live?"}};
  const GenerateResult first = s.chat(chat, greedy(12), "chatml");
  EXPECT_EQ(first.n_cached, 0);
  chat.push_back({"assistant", first.text});
  chat.push_back({"user", "And Mr. Darcy?"});
  const GenerateResult second = s.chat(chat, greedy(12), "chatml");
  // What the cache can reuse: the tokens the two renderings share (the first reply's last
  // token was never evaluated).
  const std::vector<int32_t> a = m.tokenize(m.render_chat({chat[0]}, true, "chatml"));
  const std::vector<int32_t> b = m.tokenize(m.render_chat(chat, true, "chatml"));
  std::vector<int32_t> held = a;
  held.insert(held.end(), first.tokens.begin(), first.tokens.end());
  if (!held.empty()) held.pop_back();
  size_t common = 0;
  while (common < held.size() && common + 1 < b.size() && held[common] == b[common]) ++common;
  EXPECT_GT(common, a.size() / 2);
  EXPECT_EQ(second.n_cached, int64_t(common));
  EXPECT_EQ(second.n_prompt, int64_t(b.size()));
  // The reply equals a fresh session's, bit for bit.
  Session fresh(m, {512, 64});
  const GenerateResult again = fresh.chat(chat, greedy(12), "chatml");
  EXPECT_EQ(again.n_cached, 0);
  EXPECT_EQ(again.tokens, second.tokens);
}

TEST(ApiSession, AdaptersChangeTheOutputAndResetTheCache) {
  Model m = Model::open(tiny_model(), cpu());
  const Adapter a = m.load_adapter(tiny_adapter());
  Session s(m);
  GenerateOptions g = greedy(4);
  g.ignore_eos = true;
  const int32_t prompt[] = {256, 72, 105};
  const GenerateResult plain = s.generate(prompt, g);
  g.adapters = {{a, 1.0f}};
  const GenerateResult adapted = s.generate(prompt, g);  // a new adapter set: a fresh cache
  EXPECT_EQ(s.n_past(), 3 + 3);
  // The same as the adapter's logits from an empty context.
  const AdapterScale use[] = {{a, 1.0f}};
  const std::vector<float> row = last_row(m.logits(prompt, use), m.info().n_vocab);
  EXPECT_EQ(adapted.tokens[0], int32_t(std::max_element(row.begin(), row.end()) - row.begin()));
  (void)plain;
}

TEST(ApiSession, CancelFromAnotherThread) {
  Model m = Model::open(kShipped, cpu());
  Session s(m, {2048, 64});
  GenerateOptions g = greedy(-1);  // until the context is full
  g.ignore_eos = true;
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  g.on_text = [&](std::string_view) {
    std::lock_guard<std::mutex> lock(mu);
    started = true;
    cv.notify_all();
    return true;
  };
  std::thread canceller([&] {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return started; });
    s.cancel();
  });
  const GenerateResult r = s.generate("It is a truth universally acknowledged", g);
  canceller.join();
  EXPECT_EQ(r.stop_reason, StopReason::Cancelled);
  EXPECT_LT(r.n_generated, 2000);
  // The cancel ended that call only.
  const GenerateResult next = s.generate(" and", greedy(3));
  EXPECT_NE(next.stop_reason, StopReason::Cancelled);
}

TEST(ApiSession, ErrorsNameTheProblem) {
  Model m = Model::open(kShipped, cpu());
  EXPECT_NE(error_of([&] { Session(m, {-5, 64}); }).find("n_ctx"), std::string::npos);
  EXPECT_NE(error_of([&] { Session(m, {64, 0}); }).find("n_batch"), std::string::npos);
  Session s(m, {16, 8});
  const std::vector<int32_t> long_prompt(40, 5);
  EXPECT_NE(error_of([&] { s.generate(long_prompt); }).find("context"), std::string::npos);
  EXPECT_NE(error_of([&] { s.eval({}); }).find("no tokens"), std::string::npos);
  const int32_t bad[] = {int32_t(m.info().n_vocab) + 3};
  EXPECT_NE(error_of([&] { s.eval(bad); }).find("out of range"), std::string::npos);
  EXPECT_EQ(s.n_ctx(), 16);
}

// ---- training ----

TrainOptions small_run(const std::string& out) {
  TrainOptions t;
  t.data = kDemoData;
  t.output = out;
  t.steps = 4;
  t.batch = 2;
  t.ctx = 32;
  t.rank = 4;
  t.lr = 1e-2;
  t.val_every = 2;
  t.val_examples = 4;
  t.save_every = 2;
  return t;
}

TEST(ApiTrainer, ReportsProgressAndWritesTheAdapter) {
  TempDir dir;
  Model m = Model::open(tiny_model(), cpu());
  Trainer t(m, small_run(dir.file("a.gguf")));
  std::vector<int64_t> steps, vals, ckpts;
  t.on_progress([&](const TrainProgress& p) {
    if (p.kind == TrainProgress::Kind::Step) {
      steps.push_back(p.step);
      EXPECT_EQ(p.total_steps, 4);
      EXPECT_TRUE(std::isfinite(p.loss));
      EXPECT_NE(p.line.find("loss"), std::string::npos);
    }
    if (p.kind == TrainProgress::Kind::Validation) vals.push_back(p.step);
    if (p.kind == TrainProgress::Kind::Checkpoint) ckpts.push_back(p.step);
  });
  const TrainResult r = t.run();
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(vals, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(ckpts, (std::vector<int64_t>{2, 4}));
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.steps_done, 4);
  EXPECT_TRUE(std::filesystem::exists(r.adapter_path));
  EXPECT_TRUE(std::filesystem::exists(r.metrics_path));
  EXPECT_TRUE(std::filesystem::exists(r.plot_path));
  // The trained adapter loads back and changes the model.
  const Adapter a = m.load_adapter(r.adapter_path);
  const int32_t ids[] = {256, 80, 97};
  const AdapterScale use[] = {{a, 1.0f}};
  EXPECT_NE(m.logits(ids, use), m.logits(ids));
}

TEST(ApiTrainer, CancelAndPauseResumeToTheSameBytes) {
  TempDir dir;
  Model m = Model::open(tiny_model(), cpu());
  TrainOptions whole = small_run(dir.file("whole.gguf"));
  whole.save_every = 0;
  Trainer(m, whole).run();
  // Cancelled from another thread after the first step: a checkpoint, then a resumed run.
  TrainOptions part = whole;
  part.output = dir.file("part.gguf");
  Trainer t(m, part);
  std::atomic<bool> once{false};
  std::thread* canceller = nullptr;
  t.on_progress([&](const TrainProgress& p) {
    if (p.kind == TrainProgress::Kind::Step && !once.exchange(true)) {
      canceller = new std::thread([&] { t.cancel(); });
      canceller->join();
    }
  });
  const TrainResult stopped = t.run();
  delete canceller;
  EXPECT_TRUE(stopped.stopped);
  EXPECT_EQ(stopped.steps_done, 1);
  ASSERT_TRUE(std::filesystem::exists(stopped.last_checkpoint)) << stopped.last_checkpoint;
  part.resume = "latest";
  const TrainResult resumed = Trainer(m, part).run();
  EXPECT_FALSE(resumed.stopped);
  EXPECT_EQ(resumed.steps_done, 4);
  EXPECT_EQ(read_file(part.output), read_file(whole.output));
  // Paused after the second step and resumed from another thread: the same bytes again.
  TrainOptions paused = whole;
  paused.output = dir.file("paused.gguf");
  Trainer p(m, paused);
  std::thread resumer;
  p.on_progress([&](const TrainProgress& e) {
    if (e.kind == TrainProgress::Kind::Step && e.step == 2) {
      p.pause();
      resumer = std::thread([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        p.resume();
      });
    }
  });
  const TrainResult pr = p.run();
  resumer.join();
  EXPECT_FALSE(pr.stopped);
  EXPECT_EQ(read_file(paused.output), read_file(whole.output));
}

// A step's sequences computed as one packed pass train what they train one by one: the same
// losses at every step and validation, and the same adapter, within float rounding (the
// gradients' sums run in another order).
TEST(ApiTrainer, PackedPassesTrainWhatSequencesOneByOneTrain) {
  TempDir dir;
  Model m = Model::open(tiny_model(), cpu());
  auto losses = [&](int64_t pack, const std::string& out) {
    TrainOptions t = small_run(dir.file(out));
    t.batch = 3;
    t.grad_accum = 2;
    t.save_every = 0;
    t.pack_tokens = pack;
    Trainer tr(m, t);
    std::vector<double> l;
    tr.on_progress([&](const TrainProgress& p) {
      if (p.kind == TrainProgress::Kind::Step) l.push_back(p.loss);
      if (p.kind == TrainProgress::Kind::Validation) l.push_back(p.val_loss);
    });
    tr.run();
    return l;
  };
  const std::vector<double> one = losses(0, "one.gguf"), packed = losses(1000, "packed.gguf");
  ASSERT_EQ(one.size(), 7u);  // 4 steps, validation at 0, 2 and 4
  ASSERT_EQ(packed.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(packed[i], one[i], 1e-4 * one[i]) << i;
  const Adapter a = m.load_adapter(dir.file("one.gguf")),
                b = m.load_adapter(dir.file("packed.gguf"));
  const int32_t ids[] = {256, 80, 97, 110};
  const AdapterScale ua[] = {{a, 1.0f}}, ub[] = {{b, 1.0f}};
  const std::vector<float> la = m.logits(ids, ua), lb = m.logits(ids, ub), base = m.logits(ids);
  double diff = 0, moved = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    diff = std::max(diff, std::fabs(double(la[i]) - lb[i]));
    moved = std::max(moved, std::fabs(double(la[i]) - base[i]));
  }
  EXPECT_GT(moved, 1e-2);         // the adapter learned something
  EXPECT_LT(diff, 1e-3 * moved);  // and both runs learned the same
}

TEST(ApiTrainer, BadOptionsNameTheOption) {
  Model m = Model::open(tiny_model(), cpu());
  TrainOptions t = small_run("/tmp/unused.gguf");
  t.rank = 0;
  EXPECT_NE(error_of([&] { Trainer(m, t); }).find("rank"), std::string::npos);
  EXPECT_EQ(option_of([&] { Trainer(m, t); }), "rank");
  t = small_run("/tmp/unused.gguf");
  t.pack_tokens = -2;
  EXPECT_EQ(option_of([&] { Trainer(m, t); }), "pack_tokens");
  t = small_run("/tmp/unused.gguf");
  t.schedule = "zigzag";
  EXPECT_NE(error_of([&] { Trainer(m, t); }).find("zigzag"), std::string::npos);
  EXPECT_EQ(option_of([&] { Trainer(m, t); }), "schedule");
  t = small_run("/tmp/unused.gguf");
  t.targets = "q,nose";
  EXPECT_NE(error_of([&] { Trainer(m, t); }).find("nose"), std::string::npos);
  EXPECT_EQ(option_of([&] { Trainer(m, t); }), "targets");
  t = small_run("/tmp/unused.gguf");
  t.data = "/nonexistent/data";
  EXPECT_NE(error_of([&] { Trainer(m, t).run(); }).find("/nonexistent/data"), std::string::npos);
  EXPECT_EQ(option_of([&] { Trainer(m, t).run(); }), "");  // a file, not an option's value
  t = small_run("/tmp/unused.gguf");
  t.resume = "/nonexistent/checkpoint";
  EXPECT_NE(error_of([&] { Trainer(m, t).run(); }).find("/nonexistent/checkpoint"),
            std::string::npos);
}

// ---- evaluation ----

TEST(ApiEval, PerplexityIsTheMeanNllOfTheLogits) {
  Model m = Model::open(kShipped, cpu());
  const std::string text =
      "It is a truth universally acknowledged, that a single man in possession of a good "
      "fortune, must be in want of a wife.";
  const std::vector<int32_t> ids = m.tokenize(text, true, false);
  const int64_t ctx = int64_t(ids.size());
  const PerplexityResult p = perplexity(m, text, ctx);
  EXPECT_EQ(p.n_chunks, 1);
  EXPECT_EQ(p.n_scored, ctx - 1);
  // Independently: -log softmax of each next token, in double.
  const std::vector<float> logits = m.logits(ids);
  const int64_t V = m.info().n_vocab;
  double nll = 0;
  for (int64_t t = 0; t + 1 < ctx; ++t) {
    const float* row = logits.data() + t * V;
    double mx = row[0];
    for (int64_t i = 1; i < V; ++i) mx = std::max(mx, double(row[i]));
    double s = 0;
    for (int64_t i = 0; i < V; ++i) s += std::exp(double(row[i]) - mx);
    nll += mx + std::log(s) - double(row[ids[size_t(t + 1)]]);
  }
  EXPECT_NEAR(p.mean_nll, nll / double(ctx - 1), 1e-9);
  EXPECT_NEAR(p.perplexity, std::exp(nll / double(ctx - 1)), 1e-6 * p.perplexity);
}

TEST(ApiEval, EvaluatesADataFile) {
  Model m = Model::open(kShipped, cpu());
  EvalOptions o;
  o.ctx = 64;
  o.max_new = 4;
  int64_t last_done = 0;
  o.on_progress = [&](std::string_view, int64_t done, int64_t) { last_done = done; };
  const EvalResult r = evaluate(m, kDemoData + "/valid.jsonl", o);
  EXPECT_EQ(r.kind, "completions");
  EXPECT_GT(r.n_examples, 0);
  EXPECT_GT(r.n_targets, r.n_examples);
  EXPECT_NEAR(r.perplexity, std::exp(r.loss), 1e-9 * r.perplexity);
  EXPECT_TRUE(r.has_exact_match);
  EXPECT_EQ(r.exact_scored, r.n_examples);
  EXPECT_GT(last_done, 0);
  EXPECT_NE(error_of([&] { evaluate(m, "/nonexistent.jsonl", o); }).find("/nonexistent.jsonl"),
            std::string::npos);
}

// ---- devices and tools ----

TEST(ApiDevices, ListsTheCpuFirst) {
  const std::vector<DeviceInfo> d = list_devices();
  ASSERT_FALSE(d.empty());
  EXPECT_EQ(d[0].name, "cpu");
  int defaults = 0;
  for (const DeviceInfo& x : d) defaults += x.is_default;
  EXPECT_EQ(defaults, 1);
  const std::string report = devices_report();
  EXPECT_NE(report.find("CPU:"), std::string::npos);
  EXPECT_NE(report.find("default device:"), std::string::npos);
}

TEST(ApiTools, RepackedFilesComputeTheSameLogits) {
  TempDir dir;
  const ToolResult q = quantize(tiny_model(), dir.file("i2s.gguf"), "i2_s");
  EXPECT_EQ(q.output, dir.file("i2s.gguf"));
  EXPECT_GT(q.file_bytes, 0u);
  Model a = Model::open(tiny_model(), cpu());
  Model b = Model::open(q.output, cpu());
  const int32_t ids[] = {256, 65, 66, 67};
  EXPECT_EQ(a.logits(ids), b.logits(ids));
  EXPECT_NE(error_of([&] { quantize(tiny_model(), dir.file("x.gguf"), "q4_0"); }).find("q4_0"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.gguf")));
  const std::string info = describe_file(tiny_model());
  EXPECT_NE(info.find("architecture:  bitnet"), std::string::npos) << info;
  EXPECT_NE(describe_file(tiny_model(), false, true).find("\"architecture\": \"bitnet\""),
            std::string::npos);
  EXPECT_NE(error_of([] { describe_file("/nonexistent.gguf"); }).find("/nonexistent.gguf"),
            std::string::npos);
}

TEST(ApiTools, AdapterThroughPeftAndBackComputesTheSame) {
  TempDir dir;
  const ToolResult e = export_peft(tiny_adapter(), dir.file("peft"));
  EXPECT_TRUE(std::filesystem::exists(dir.file("peft/adapter_config.json")));
  ConvertOptions co;
  co.base = tiny_model();
  const ToolResult c = convert(dir.file("peft"), dir.file("back.gguf"), co);
  EXPECT_NE(c.summary.find("checked against"), std::string::npos) << c.summary;
  Model m = Model::open(tiny_model(), cpu());
  const Adapter x = m.load_adapter(tiny_adapter());
  const Adapter y = m.load_adapter(dir.file("back.gguf"));
  const Adapter z = m.load_adapter(dir.file("peft"));  // a PEFT folder loads directly too
  const int32_t ids[] = {256, 88, 89};
  const AdapterScale ux[] = {{x, 1.0f}}, uy[] = {{y, 1.0f}}, uz[] = {{z, 1.0f}};
  EXPECT_EQ(m.logits(ids, ux), m.logits(ids, uy));
  EXPECT_EQ(m.logits(ids, ux), m.logits(ids, uz));
  EXPECT_NE(error_of([&] { convert(dir.file("missing"), dir.file("o.gguf")); }).find("missing"),
            std::string::npos);
}

TEST(ApiTools, MergedFloatModelIsCloseToTheAdapter) {
  TempDir dir;
  MergeOptions mo;
  mo.adapters = {tiny_adapter()};
  mo.type = "f32";
  merge(tiny_model(), dir.file("merged.gguf"), mo);
  Model m = Model::open(tiny_model(), cpu());
  const Adapter a = m.load_adapter(tiny_adapter());
  ModelOptions float_acts = cpu();
  float_acts.act_quant = false;  // merged layers run with float activations
  Model mf = Model::open(tiny_model(), float_acts);
  const Adapter af = mf.load_adapter(tiny_adapter());
  Model merged = Model::open(dir.file("merged.gguf"), float_acts);
  const int32_t ids[] = {256, 70, 71, 72};
  const AdapterScale use[] = {{af, 1.0f}};
  const std::vector<float> want = mf.logits(ids, use);
  const std::vector<float> got = merged.logits(ids);
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, double(std::fabs(got[i] - want[i])));
    ref = std::max(ref, double(std::fabs(want[i])));
  }
  EXPECT_LT(err, 1e-4 * ref);
  (void)a;
  MergeOptions bad;
  EXPECT_NE(error_of([&] { merge(tiny_model(), dir.file("m2.gguf"), bad); }).find("no adapters"),
            std::string::npos);
}

TEST(ApiTools, CreatesAndBenchesModels) {
  TempDir dir;
  CreateOptions o;
  o.preset = "tiny";
  o.type = "tq1_0";
  o.layers = 1;
  const ToolResult r = create_model(dir.file("c.gguf"), o);
  EXPECT_NE(r.summary.find("tq1_0"), std::string::npos) << r.summary;
  Model m = Model::open(r.output, cpu());
  EXPECT_EQ(m.info().n_layer, 1);
  BenchOptions b;
  b.n_prompt = 8;
  b.n_gen = 4;
  b.repetitions = 1;
  const BenchResult br = bench(m, b);
  EXPECT_GT(br.prompt_tokens_per_s, 0);
  EXPECT_GT(br.gen_tokens_per_s, 0);
  EXPECT_GT(br.weight_bytes_per_token, 0);
  b.train = true;
  b.train_ctx = 8;
  b.train_steps = 1;
  b.rank = 2;
  EXPECT_GT(bench(m, b).train_tokens_per_s, 0);
  CreateOptions bad;
  bad.preset = "huge";
  EXPECT_NE(error_of([&] { create_model(dir.file("h.gguf"), bad); }).find("huge"),
            std::string::npos);
}

}  // namespace
}  // namespace trit::api_test
