// Adapters in the forward pass: logits with LoRA layers attached against the double-precision
// reference with the same branches, and the CLI's --lora flag against the library.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "infer/session.h"
#include "tools/create.h"
#include "model/lora_set.h"
#include "model/model.h"
#include "reference_model.h"
#include "test_util.h"

namespace trit::engine {
namespace {

// An adapter with random A and B (B non-zero, unlike a fresh one) on every linear layer
// named by `targets`, plus the head when asked.
LoraAdapter random_adapter(const HParams& hp, int64_t rank, float alpha, bool rslora, bool head,
                           uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  LoraAdapter ad;
  ad.alpha = alpha;
  ad.rslora = rslora;
  auto add = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    LoraLayer L;
    L.n_in = n_in;
    L.n_out = n_out;
    L.rank = rank;
    L.a.resize(size_t(rank * n_in));
    L.b.resize(size_t(n_out * rank));
    for (float& v : L.a) v = nd(rng);
    for (float& v : L.b) v = nd(rng);
    ad.layers[name] = std::move(L);
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (const std::string& what : block_linear_names()) {
      auto [n_in, n_out] = block_linear_shape(hp, what);
      add(block_tensor_name(l, what), n_in, n_out);
    }
  }
  if (head) add("output.weight", hp.n_embd, hp.n_vocab);
  return ad;
}

double rel_error(const std::vector<float>& a, const test::Mat& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST(LoraForward, MatchesReferenceWithBranchesOnEveryLayerAndTheHead) {
  test::TempDir dir;
  CreateOptions o;
  o.hp = *hparams_preset("tiny");
  o.seed = 3;
  create_random_model(o, dir.file("m.gguf"));
  auto model = Model::load(dir.file("m.gguf"));
  const HParams& hp = model->hparams();
  const LoraAdapter a1 = random_adapter(hp, 4, 8.0f, false, true, 1);
  const LoraAdapter a2 = random_adapter(hp, 2, 4.0f, true, false, 2);
  const LoraSet set = resolve_lora({{&a1, 1.0f}, {&a2, 0.5f}}, hp);
  test::ReferenceModel ref(dir.file("m.gguf"));
  ref.add_lora(a1, 1.0);
  ref.add_lora(a2, 0.5);
  const std::vector<int32_t> ids = {256, 3, 77, 140, 9, 300, 41};
  ThreadPool pool(2);
  for (bool act_quant : {false, true}) {
    Session s(*model, 16, pool, ForwardOptions{act_quant, &set}, 3);
    std::vector<float> logits;
    s.eval(ids, logits, true);
    const double err = rel_error(logits, ref.logits(ids, act_quant));
    EXPECT_LT(err, act_quant ? 1e-2 : 1e-4) << "act_quant " << act_quant;
  }
  // The adapters change the result (the check above is not vacuous).
  Session plain(*model, 16, pool, ForwardOptions{false, nullptr});
  std::vector<float> base;
  plain.eval(ids, base, true);
  test::ReferenceModel ref_plain(dir.file("m.gguf"));
  EXPECT_GT(rel_error(base, ref.logits(ids, false)), 1e-2);
  EXPECT_LT(rel_error(base, ref_plain.logits(ids, false)), 1e-4);
}

TEST(LoraForward, ZeroBIsTheBaseModel) {
  test::TempDir dir;
  CreateOptions o;
  o.hp = *hparams_preset("tiny");
  create_random_model(o, dir.file("m.gguf"));
  auto model = Model::load(dir.file("m.gguf"));
  const LoraAdapter fresh = lora_init(model->hparams(), "all", 8, 16.0f, false, 9);
  const LoraSet set = resolve_lora({{&fresh, 1.0f}}, model->hparams());
  ThreadPool pool(1);
  std::vector<float> with, without;
  Session(*model, 8, pool, ForwardOptions{true, &set}).eval({1, 2, 3}, with, true);
  Session(*model, 8, pool, ForwardOptions{true, nullptr}).eval({1, 2, 3}, without, true);
  EXPECT_EQ(with, without);
}

TEST(LoraForward, MismatchedLayerIsNamed) {
  HParams hp = *hparams_preset("tiny");
  LoraAdapter ad;
  LoraLayer L;
  L.n_in = 100;
  L.n_out = hp.n_embd;
  L.rank = 1;
  L.a.assign(100, 0.0f);
  L.b.assign(size_t(hp.n_embd), 0.0f);
  ad.layers["blk.1.attn_q.weight"] = L;
  try {
    resolve_lora({{&ad, 1.0f}}, hp);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.1.attn_q.weight"), std::string::npos) << e.what();
  }
  ad.layers.clear();
  ad.layers["blk.9.attn_q.weight"] = L;
  EXPECT_THROW(resolve_lora({{&ad, 1.0f}}, hp), Error);
}

}  // namespace
}  // namespace trit::engine
