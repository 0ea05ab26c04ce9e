// Adapters in the forward pass: logits with LoRA branches (tensors of the backend, as --lora
// uploads them) on every linear layer and the head, against the double-precision reference
// with the same branches.
#include <gtest/gtest.h>

#include <string>

#include "backend/select.h"
#include "core/error.h"
#include "infer/session.h"
#include "model/lora_set.h"
#include "model/model.h"
#include "support/adapters.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "support/reference_model.h"
#include "tools/create.h"
#include "train/lora_init.h"

namespace trit::engine {
namespace {

using test::random_adapter;
using test::rel_l2;

TEST(LoraForward, MatchesReferenceWithBranchesOnEveryLayerAndTheHead) {
  test::TempDir dir;
  const std::string path = test::create_model(dir, "m.gguf", test::tiny_options(3));
  auto model = Model::load(path);
  const HParams& hp = model->hparams();
  const LoraAdapter a1 = random_adapter(
      hp, {.targets = "all,head", .rank = 4, .alpha = 8.0f, .rslora = false, .seed = 1});
  const LoraAdapter a2 =
      random_adapter(hp, {.targets = "all", .rank = 2, .alpha = 4.0f, .rslora = true, .seed = 2});
  test::ReferenceModel ref(path);
  ref.add_lora(a1, 1.0);
  ref.add_lora(a2, 0.5);
  const std::vector<int32_t> ids = {256, 3, 77, 140, 9, 300, 41};
  ThreadPool pool(2);
  const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
  const test::AttachedLora lora = test::attach_lora(*cpu, hp, {{&a1, 1.0f}, {&a2, 0.5f}});
  for (bool act_quant : {false, true}) {
    Session s(*model, 16, *cpu, ForwardOptions{act_quant, &lora.set}, 3);
    std::vector<float> logits;
    s.eval(ids, logits, true);
    const double err = rel_l2(logits, ref.logits(ids, act_quant));
    EXPECT_LT(err, act_quant ? 1e-2 : 1e-4) << "act_quant " << act_quant;
  }
  // The adapters change the result (the check above is not vacuous).
  Session plain(*model, 16, pool, ForwardOptions{false, nullptr});
  std::vector<float> base;
  plain.eval(ids, base, true);
  test::ReferenceModel ref_plain(path);
  EXPECT_GT(rel_l2(base, ref.logits(ids, false)), 1e-2);
  EXPECT_LT(rel_l2(base, ref_plain.logits(ids, false)), 1e-4);
}

TEST(LoraForward, ZeroBIsTheBaseModel) {
  test::TempDir dir;
  auto model = Model::load(test::create_model(dir, "m.gguf", test::tiny_options(42)));
  const LoraAdapter fresh = lora_init(model->hparams(), "all", 8, 16.0f, false, 9);
  const std::vector<int32_t> ids = {1, 2, 3};
  EXPECT_EQ(
      test::session_logits(*model, ids,
                           {.act_quant = true, .lora = {{&fresh, 1.0f}}, .threads = 1, .n_ctx = 8}),
      test::session_logits(*model, ids, {.act_quant = true, .threads = 1, .n_ctx = 8}));
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
  // Uploading it to a backend checks the same.
  ThreadPool pool(1);
  const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
  try {
    DeviceAdapter(ad, hp, *cpu, "a.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("blk.1.attn_q.weight"), std::string::npos) << e.what();
  }
  ad.layers.clear();
  ad.layers["blk.9.attn_q.weight"] = L;
  EXPECT_THROW(resolve_lora({{&ad, 1.0f}}, hp), Error);
  EXPECT_THROW(DeviceAdapter(ad, hp, *cpu, "a.gguf"), Error);
}

}  // namespace
}  // namespace trit::engine
