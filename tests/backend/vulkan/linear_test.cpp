// The Vulkan backend's linear family beyond the op table of ops_test.cpp: the fused forms of
// norm_linear and rope_store_kv (decoding and a few tokens) and the small int8 tiles. Each computes
// every value with the expression of the path it stands in for, so the tests compare bits with that
// path and check from the profile (TRIT_VK_PROFILE=1) that the kernels under test ran.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "model/model.h"
#include "support/files.h"
#include "support/models.h"
#include "support/vulkan.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using namespace test;  // NOLINT: the shared test helpers

// ---- Decoding fusions -------------------------------------------------------------------------
// norm_linear's fused kernels (vulkan/linear.cpp: up to 16 tokens: several bitlinears in one
// matvec, the gated activation or the residual add as its epilogue; one token: the norm inside
// the matvec; several: the norm and the quantiser in one kernel before it) and rope_store_kv's
// (rope + KV store) compute every value with the expression of the ops of the default composition,
// so their outputs equal those with the fusions off (TRIT_VK_DECODE_FUSION=0) bit for bit. Each
// test also checks from the profile that the fused pipelines ran.

// Opens a Vulkan backend with the decoding fusions on or off; profile: the profile table is
// written to stderr when the backend closes.
void open_fusion(bool fused, uint64_t limit, bool profile, std::unique_ptr<Backend>* out) {
  const ScopedEnv fusion("TRIT_VK_DECODE_FUSION", fused ? "1" : "0");
  // The fused matvec at every token count it takes (by default it takes fewer).
  const ScopedEnv tokens("TRIT_VK_FUSED_TOKENS", fused ? "16" : nullptr);
  const ScopedEnv table("TRIT_VK_PROFILE", profile ? "1" : nullptr);
  open_vulkan(limit, out);
}

// Runs `run` on a profiled backend and returns the profile table it printed.
template <class Run>
std::string profiled(uint64_t limit, Run run) {
  ::testing::internal::CaptureStderr();
  {
    std::unique_ptr<Backend> vk;
    open_fusion(true, limit, true, &vk);
    if (vk) run(*vk);
  }
  return ::testing::internal::GetCapturedStderr();
}

// Two steps of n tokens of one block (n = 1: decoding) on 1024-wide layers with GQA, partial
// rope, an out_scale and relu2 or silu, composed as model/block.cpp composes them; the outputs of
// every op. The first step's sub-norm before ffn_down works in place (the norm cannot go into the
// matvec then), the second's writes the gate's tensor, as generation does.
// The weights are TQ2_0 (k: I2_S) or all TQ1_0 (kept in place on the device: the decoding matvec
// reads it, the other products its T2 codes).
std::vector<Out> block_steps(Backend& b, Activation act, int64_t n, DType type = DType::TQ2_0) {
  using W = decltype(ternary_weight(type, 256, 256, false, 0));
  static std::map<DType, std::vector<W>> weights;
  std::vector<W>& ws = weights[type];
  if (ws.empty()) {
    const DType k_type = type == DType::TQ1_0 ? type : DType::I2_S;
    const struct {
      DType t;
      int64_t n_in, n_out;
    } shapes[] = {{type, 1024, 1024}, {k_type, 1024, 256}, {type, 1024, 256}, {type, 1024, 1024},
                  {type, 1024, 1280}, {type, 1024, 1280},  {type, 1280, 1024}};
    uint32_t seed = 301;
    for (const auto& sh : shapes)
      ws.push_back(ternary_weight(sh.t, sh.n_in, sh.n_out, false, seed++));
    ws[1]->w.out_scale = 1.25f;
  }
  const W &wq = ws[0], &wk = ws[1], &wv = ws[2], &wo = ws[3], &wg = ws[4], &wu = ws[5], &wd = ws[6];
  const AttnShape shape{
      .n_head = 8, .n_head_kv = 2, .head_dim = 128, .rope_dim = 96, .rope_theta = 10000};
  const LinearMode mode{.act_quant = true};
  const std::vector<float> g1 = randn(1024, 311, 0.1f), g2 = randn(1280, 312, 0.1f);
  TensorPtr x = upload(b, "x", n, 1024, randn(n * 1024, 313));
  TensorPtr proj = b.tensor("proj", n, 1024);
  TensorPtr h = b.tensor("h", n, 1024), q = b.tensor("q", n, 1024);
  TensorPtr k = b.tensor("k", n, 256), v = b.tensor("v", n, 256);
  const int64_t cache = 40 + 2 * n;
  TensorPtr kc = upload(b, "cache_k", cache, 256, randn(cache * 256, 315));
  TensorPtr vc = upload(b, "cache_v", cache, 256, randn(cache * 256, 316));
  TensorPtr attn = b.tensor("attn", n, 1024);
  TensorPtr gate = b.tensor("gate", n, 1280), up = b.tensor("up", n, 1280);
  TensorPtr a = b.tensor("act", n, 1280);
  for (int64_t pos : {int64_t(40), 40 + n}) {
    const LinearOp qkv[] = {{&wq->w, q.get(), {}}, {&wk->w, k.get(), {}}, {&wv->w, v.get(), {}}};
    b.norm_linear({x.get(), g1.data(), 1e-5f, h.get()}, qkv, n, mode, LinearEpilogue::none());
    b.rope_store_kv(*q, *k, *v, *kc, *vc, std::vector<SeqRows>{{0, n, pos, 0}}, shape);
    b.attention(*attn, *q, *kc, *vc, std::vector<SeqRows>{{0, n, pos, 0}}, shape);
    const LinearOp o[] = {{&wo->w, proj.get(), {}}};
    b.norm_linear({attn.get(), g1.data(), 1e-5f, h.get()}, o, n, mode, LinearEpilogue::add_to(*x));
    const LinearOp gu[] = {{&wg->w, gate.get(), {}}, {&wu->w, up.get(), {}}};
    b.norm_linear({x.get(), g1.data(), 1e-5f, h.get()}, gu, n, mode,
                  LinearEpilogue::gated(act, *a));
    DeviceTensor& normed = pos == 40 ? *a : *gate;
    const LinearOp down[] = {{&wd->w, proj.get(), {}}};
    b.norm_linear({a.get(), g2.data(), 1e-5f, &normed}, down, n, mode, LinearEpilogue::add_to(*x));
  }
  b.rms_norm({x.get(), g1.data(), 1e-5f, h.get()}, n);
  std::vector<Out> outs;
  for (const TensorPtr* t : {&x, &h, &q, &attn, &gate, &up, &a, &proj}) {
    outs.push_back(download(b, **t, n, 0));
  }
  outs.push_back(download(b, *kc, cache, 0));
  outs.push_back(download(b, *vc, cache, 0));
  return outs;
}

// The block's steps with the fusions on and off, at 64 KiB (every weight in pieces, so the
// matvec takes several segments per dispatch) and unlimited: the same bits.
void expect_fused_block_bits(int64_t n, bool both_activations = true, DType type = DType::TQ2_0) {
  for (Activation act : {Activation::Relu2, Activation::Silu}) {
    if (act == Activation::Silu && !both_activations) break;
    for (uint64_t limit : {uint64_t(0), 64 * KiB}) {
      const std::string what = cat(dtype_name(type), ", ", activation_name(act), ", ", n,
                                   " tokens at ", limit_name(limit));
      std::unique_ptr<Backend> plain, fused;
      open_fusion(false, limit, false, &plain);
      if (!plain) return;
      open_fusion(true, limit, false, &fused);
      const std::vector<Out> want = block_steps(*plain, act, n, type);
      const std::vector<Out> got = block_steps(*fused, act, n, type);
      ASSERT_EQ(want.size(), got.size());
      for (size_t i = 0; i < want.size(); ++i) expect_match(want[i], got[i].v, 0, what);
    }
  }
}

TEST(VulkanDecodeFusion, BlockGivesTheBitsOfTheUnfusedOps) {
  expect_fused_block_bits(1);
  if (HasFatalFailure() || IsSkipped()) return;
  // One token: the norms go into the matvec (but the in-place one: rms_norm_quant, then the
  // matvec of the quantised row), whose epilogues do the gated activation and the residual adds;
  // rope_kv ropes and stores k and v.
  const std::string table = profiled(0, [](Backend& b) { block_steps(b, Activation::Silu, 1); });
  for (const char* fused : {"matvec_norm_ternary", "matvec_ternary", "rms_norm_quant", "rope_kv"}) {
    EXPECT_NE(table.find(fused), std::string::npos) << fused << " did not run:\n" << table;
  }
  for (const char* replaced : {"gated_act", " add:", "rope:", "quantize_acts"}) {
    EXPECT_EQ(table.find(replaced), std::string::npos) << replaced << " ran:\n" << table;
  }
}

// TQ1_0 kept in place: the fused matvec reads its five-trit bytes, the unfused ops (and the
// matvec of the in-place norm's step) take the T2 codes tq1_codes writes from them; one token
// and three.
TEST(VulkanDecodeFusion, TQ1InPlaceGivesTheBitsOfTheUnfusedOps) {
  for (int64_t n : {1, 3}) {
    expect_fused_block_bits(n, n == 1, DType::TQ1_0);
    if (HasFatalFailure() || IsSkipped()) return;
  }
  const std::string table =
      profiled(0, [](Backend& b) { block_steps(b, Activation::Silu, 1, DType::TQ1_0); });
  for (const char* fused : {"matvec_norm_ternary_tq1", "matvec_ternary_tq1"}) {
    EXPECT_NE(table.find(fused), std::string::npos) << fused << " did not run:\n" << table;
  }
}

TEST(VulkanDecodeFusion, FewTokensGiveTheBitsOfTheUnfusedOps) {
  // 3 tokens take accumulators for 4 (the rest unused); 16 is the most the matvec takes.
  for (int64_t n : {3, 16}) {
    expect_fused_block_bits(n);
    if (HasFatalFailure() || IsSkipped()) return;
  }
  // A few tokens: the norm and the quantiser in one kernel (rms_norm_quant), then one matvec
  // for q, k and v, one for gate and up with the activation, and the residual adds in the
  // projections' matvecs; rope_kv.
  const std::string table = profiled(0, [](Backend& b) { block_steps(b, Activation::Relu2, 5); });
  for (const char* fused : {"rms_norm_quant", "matvec_ternary", "rope_kv"}) {
    EXPECT_NE(table.find(fused), std::string::npos) << fused << " did not run:\n" << table;
  }
  for (const char* replaced :
       {"rope:", "matvec_norm_ternary", "gated_act", " add:", "quantize_acts", "matmul_ternary"}) {
    EXPECT_EQ(table.find(replaced), std::string::npos) << replaced << " ran:\n" << table;
  }
}

// The fused matvec's rows two at a time a subgroup (TRIT_VK_FUSED_PAIR=1): two rows a subgroup,
// and three (a pair, then one row alone); T2 codes and TQ1_0 in place, 3 and 16 tokens, each
// row count with each type and each token count once.
TEST(VulkanDecodeFusion, RowPairsGiveTheBitsOfTheUnfusedOps) {
  const ScopedEnv pairs("TRIT_VK_FUSED_PAIR", "1");
  const std::tuple<const char*, DType, int64_t> cases[] = {{"2", DType::TQ2_0, 16},
                                                           {"2", DType::TQ1_0, 3},
                                                           {"3", DType::TQ2_0, 3},
                                                           {"3", DType::TQ1_0, 16}};
  for (const auto& [rows, type, n] : cases) {
    const ScopedEnv per_subgroup("TRIT_VK_FUSED_ROWS", rows);
    SCOPED_TRACE(cat(rows, " rows a subgroup"));
    expect_fused_block_bits(n, false, type);
    if (HasFatalFailure() || IsSkipped()) return;
  }
}

TEST(VulkanDecodeFusion, ManyTokensGiveTheBitsOfTheUnfusedOps) {
  // More tokens than the matvecs take (a batch of sequences, a prompt): the norm and the
  // quantiser are still one kernel before the tiled products (the bits of the two).
  expect_fused_block_bits(20, false);
  if (HasFatalFailure() || IsSkipped()) return;
  const std::string table = profiled(0, [](Backend& b) { block_steps(b, Activation::Relu2, 20); });
  // (The in-place norm of the first step still takes rms_norm and quantize_acts.)
  EXPECT_NE(table.find("rms_norm_quant"), std::string::npos) << table;
  EXPECT_EQ(table.find("matvec_ternary"), std::string::npos) << table;
}

// A row wider than rms_norm holds in registers (9216): the norm cannot go into the matvec, and
// rms_norm_quant reads the row from memory.
std::vector<Out> decode_wide(Backend& b) {
  static const auto w = ternary_weight(DType::TQ2_0, 9216, 64, false, 321);
  const std::vector<float> g = randn(9216, 322, 0.1f);
  TensorPtr x = upload(b, "x", 1, 9216, randn(9216, 323));
  TensorPtr r = upload(b, "r", 1, 9216, randn(9216, 324));
  TensorPtr h = b.tensor("h", 1, 9216), y = b.tensor("y", 1, 64);
  b.add(*x, *r, 1);
  const LinearOp op[] = {{&w->w, y.get(), {}}};
  b.norm_linear({x.get(), g.data(), 1e-5f, h.get()}, op, 1, LinearMode{.act_quant = true},
                LinearEpilogue::none());
  b.add(*x, *r, 1);
  b.rms_norm({x.get(), g.data(), 1e-5f, h.get()}, 1);
  return {download(b, *x, 1, 0), download(b, *h, 1, 0), download(b, *y, 1, 0)};
}

TEST(VulkanDecodeFusion, WideRowsGiveTheBitsOfTheUnfusedOps) {
  std::unique_ptr<Backend> plain, fused;
  open_fusion(false, 0, false, &plain);
  if (!plain) return;
  open_fusion(true, 0, false, &fused);
  const std::vector<Out> want = decode_wide(*plain), got = decode_wide(*fused);
  for (size_t i = 0; i < want.size(); ++i) expect_match(want[i], got[i].v, 0, "9216 wide");
  const std::string table = profiled(0, [](Backend& b) { decode_wide(b); });
  EXPECT_NE(table.find("rms_norm_quant:"), std::string::npos) << table;
  EXPECT_NE(table.find("matvec_ternary"), std::string::npos) << table;
  EXPECT_EQ(table.find("matvec_norm_ternary"), std::string::npos) << table;
  EXPECT_EQ(table.find("quantize_acts"), std::string::npos) << table;
}

TEST(VulkanDecodeFusion, ModelsGiveTheBitsOfTheUnfusedOps) {
  test::TempDir dir;
  for (auto [type, act] :
       {std::pair{DType::TQ2_0, Activation::Relu2}, std::pair{DType::I2_S, Activation::Silu},
        std::pair{DType::TQ1_0, Activation::Relu2}}) {
    CreateOptions o = tiny_options(9);
    o.hp.n_layer = 2, o.hp.n_vocab = 1000, o.hp.act = act;
    o.type = type;
    auto model = Model::load(create_model(dir, cat(dtype_name(type), ".gguf"), o));
    const ForwardOptions fo{true, nullptr};
    std::unique_ptr<Backend> plain, fused;
    open_fusion(false, 0, false, &plain);
    if (!plain) return;
    open_fusion(true, 0, false, &fused);
    const PromptAndSteps want = prompt_and_steps(*model, *plain, fo);
    const PromptAndSteps got = prompt_and_steps(*model, *fused, fo);
    const int64_t V = model->hparams().n_vocab;
    expect_match({"prompt logits", V, want.prompt}, got.prompt, 0, std::string(dtype_name(type)));
    expect_match({"decoding logits", V, want.steps}, got.steps, 0, std::string(dtype_name(type)));
    const std::string table = profiled(0, [&](Backend& b) { prompt_and_steps(*model, b, fo); });
    EXPECT_NE(table.find("matvec_norm_ternary"), std::string::npos) << table;
  }
}

// GPUs take 32 x 16 tiles where the default tiles would leave the device idle (training's
// 128-token products); integer sums make the tile shape irrelevant to the bits, which this
// checks on a device that does not pick them by itself.
TEST(VulkanSmallTiles, GiveTheBitsOfTheDefaultTiles) {
  const auto uniform = ternary_weight(DType::TQ2_0, 512, 300, false, 5);
  const auto blocks = ternary_weight(DType::TQ2_0, 512, 300, true, 6);
  const int64_t n = 100;
  const std::vector<float> xv = randn(n * 512, 7);
  auto run = [&](const char* small) {
    std::unique_ptr<Backend> vk;
    {
      const ScopedEnv tiles("TRIT_VK_SMALL_TILES", small);
      open_vulkan(0, &vk);
    }
    std::vector<float> out;
    if (!vk) return out;
    TensorPtr x = upload(*vk, "x", n, 512, xv);
    TensorPtr y1 = vk->tensor("y1", n, 300), y2 = vk->tensor("y2", n, 300);
    const LinearOp ops[] = {{&uniform->w, y1.get(), {}}, {&blocks->w, y2.get(), {}}};
    vk->linear(ops, *x, n, LinearMode{.act_quant = true});
    for (const TensorPtr* y : {&y1, &y2}) {
      std::vector<float> v(size_t(n * 300));
      vk->read(**y, 0, n, v.data());
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  };
  const std::vector<float> want = run("0");
  if (want.empty()) return;
  expect_match({"default tiles", 300, want}, run("1"), 0, "small tiles");
}

}  // namespace
}  // namespace trit::engine
