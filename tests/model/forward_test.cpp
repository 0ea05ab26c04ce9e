// The forward pass against an independent double-precision implementation written here from
// the dequantised weights, and the KV cache against recomputing the whole sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/quant.h"
#include "infer/session.h"
#include "io/gguf.h"
#include "model/model.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "support/reference_model.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::Mat;
using test::ReferenceModel;

std::string make_model(const test::TempDir& dir, DType type, Activation act, bool tied,
                       DType embd = DType::F16) {
  CreateOptions o = test::tiny_options(7);
  o.hp.act = act;
  o.hp.tied_head = tied;
  o.type = type;
  o.embd_type = embd;
  return test::create_model(dir, cat("m_", dtype_name(type), "_", int(act), tied, ".gguf"), o);
}

std::vector<int32_t> some_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((i * 131 + 7) % vocab);
  return ids;
}

struct Case {
  DType type;
  Activation act;
  bool tied;
  DType embd;
};

class ForwardVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardVsReference, LogitsMatchIndependentImplementation) {
  test::TempDir dir;
  const Case c = GetParam();
  const std::string path = make_model(dir, c.type, c.act, c.tied, c.embd);
  auto model = Model::load(path);
  ReferenceModel ref(path);
  const std::vector<int32_t> ids = some_ids(12, model->hparams().n_vocab);
  ThreadPool pool(2);
  for (bool act_quant : {false, true}) {
    Session s(*model, 32, pool, ForwardOptions{act_quant}, 5);  // several batches
    std::vector<float> logits;
    s.eval(ids, logits, true);
    const Mat expected = ref.logits(ids, act_quant);
    const double err = test::rel_l2(logits, expected);
    // Float activations: only f32 rounding differs. Int8: a rare rounding flip of one
    // activation moves a logit slightly.
    EXPECT_LT(err, act_quant ? 1e-2 : 1e-4) << "act_quant " << act_quant;
    const int64_t V = model->hparams().n_vocab;
    int agree = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      const auto* a = logits.data() + t * size_t(V);
      const auto* b = expected.data() + t * size_t(V);
      agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
    }
    EXPECT_GE(agree, int(ids.size()) - 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, ForwardVsReference,
                         ::testing::Values(Case{DType::TQ2_0, Activation::Relu2, true, DType::F16},
                                           Case{DType::TQ1_0, Activation::Silu, false, DType::Q8_0},
                                           Case{DType::I2_S, Activation::Relu2, true, DType::Q6_K},
                                           Case{DType::TQ2_0, Activation::Silu, true, DType::F32}));

TEST(KvCache, IncrementalDecodingEqualsRecomputation) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  const int64_t V = model->hparams().n_vocab;
  const std::vector<int32_t> ids = some_ids(20, V);
  ThreadPool pool(2);
  Session whole(*model, 32, pool);
  std::vector<float> all;
  whole.eval(ids, all, true);

  Session step(*model, 32, pool);
  std::vector<float> logits;
  step.eval({ids.begin(), ids.begin() + 7}, logits);  // a prompt, then one token at a time
  for (size_t t = 6; t < ids.size(); ++t) {
    if (t > 6) step.eval({ids[t]}, logits);
    for (int64_t i = 0; i < V; ++i) {
      ASSERT_NEAR(logits[size_t(i)], all[t * size_t(V) + size_t(i)],
                  1e-5 * (1 + std::fabs(all[t * size_t(V) + size_t(i)])))
          << "position " << t << " logit " << i;
    }
  }
}

// The f16 cache option: logits of a prompt and of decoding steps within a stated bound of the
// f32 cache's (relative to the logits' range), on the shipped model and a random one, with
// float and int8 activations. Halves hold 11 significant bits: keys and values move by up to
// 2^-12 of their size; with int8 activations such a move flips an activation's rounding now
// and then (as any last-bit difference does), so its bound is wider.
TEST(KvCache, F16CacheStaysWithinItsBoundOfF32) {
  test::TempDir dir;
  const std::string shipped = std::string(TRIT_TEST_DATA) + "/../../models/austen-tiny.gguf";
  CreateOptions o = test::tiny_options(8);
  o.hp.n_vocab = 1000;  // prompt_and_steps' tokens
  for (const std::string& path : {shipped, test::create_model(dir, "random.gguf", o)}) {
    auto model = Model::load(path);
    const int64_t V = model->hparams().n_vocab;
    ThreadPool pool(2);
    CpuBackend cpu(pool);
    for (bool act_quant : {false, true}) {
      const auto f32 = test::prompt_and_steps(*model, cpu, {act_quant, nullptr, KvType::F32}, 60);
      const auto f16 = test::prompt_and_steps(*model, cpu, {act_quant, nullptr, KvType::F16}, 60);
      const double tol = act_quant ? 2e-2 : 1e-3;  // measured: 7.9e-3, 1.5e-4
      const std::string what = cat(path, act_quant ? " W1.58A8" : " float activations");
      test::expect_logits_close(f32.prompt, f16.prompt, V, tol, what + " prompt");
      test::expect_logits_close(f32.steps, f16.steps, V, tol, what + " decoding");
      EXPECT_NE(f32.steps, f16.steps) << what << ": the f16 cache changed nothing";
    }
  }
}

TEST(KvCache, TruncateThenReplayGivesSameLogits) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  const std::vector<int32_t> ids = some_ids(10, model->hparams().n_vocab);
  ThreadPool pool(1);
  Session s(*model, 16, pool);
  std::vector<float> first, second;
  s.eval(ids, first);
  s.truncate(4);
  s.eval({ids.begin() + 4, ids.end()}, second);
  EXPECT_EQ(first, second);
}

TEST(Forward, ThreadCountDoesNotChangeResults) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  const std::vector<int32_t> ids = some_ids(9, model->hparams().n_vocab);
  std::vector<float> a, b;
  ThreadPool p1(1), p3(3);
  Session(*model, 16, p1).eval(ids, a, true);
  Session(*model, 16, p3).eval(ids, b, true);
  EXPECT_EQ(a, b);
}

TEST(Forward, RejectsOutOfRangeTokensBeforeTouchingTheCache) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  ThreadPool pool(1);
  Session s(*model, 16, pool);
  std::vector<float> logits;
  try {
    s.eval({1, 2, int32_t(model->hparams().n_vocab)}, logits);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.n_past(), 0);
  EXPECT_THROW(s.eval(some_ids(17, 100), logits), Error);  // beyond the context
}

}  // namespace
}  // namespace trit::engine
