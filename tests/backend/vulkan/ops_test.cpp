// Backend parity (STYLE habit 5): every forward op of the Vulkan backend against the CPU backend
// (the reference) at binding limits of 64 KiB (every case has tensors in several pieces), 512 KiB
// (some tensors in pieces, others whole) and none, with a per-op threshold. The shapes are small,
// so that a CPU Vulkan driver (lavapipe) runs the suite in about a minute: linear layers of 768
// inputs and up to 768 outputs for 37 to 101 tokens, an LM head of 1030 x 256, an embedding table
// of 2050 x 256, KV caches of 520 positions; the limits are scaled down with them, so that the
// weights, activations, caches and logits still come in several pieces (with partial last pieces
// and odd row counts for the edge tiles). DESIGN sections 2 and 6: a quantised ternary matmul with
// a uniform scale, rope, relu2, add, embedding and store_kv (f32 and f16 caches) are
// bit-identical to the CPU;
// rms_norm, float matmuls, LoRA branches, attention and silu agree to 1e-5 of the largest value;
// nothing that is bit-identical, nor attention (its chunk merge order is fixed), depends on the
// limit. Also: queued writes keep the order of the work, and a prompt's attention equals that of
// its tokens decoded one by one. Without a Vulkan device or loader the tests skip, unless
// TRIT_REQUIRE_VULKAN=1 (CI) makes them fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/lora.h"
#include "core/quant.h"
#include "support/vulkan.h"

namespace trit::engine {
namespace {

using namespace test;  // NOLINT: the shared Vulkan test helpers

// A merged (float) linear layer.
std::unique_ptr<HostWeight> float_weight(DType type, int64_t n_in, int64_t n_out, uint64_t seed) {
  auto h = std::make_unique<HostWeight>();
  h->w.f = float_matrix(h->bytes, type, n_in, n_out, seed, 1.0f / std::sqrt(float(n_in)));
  h->w.name = cat(dtype_name(type), "_", n_out, "x", n_in);
  h->w.m.type = type;
  h->w.m.n_in = n_in;
  h->w.m.n_out = n_out;
  return h;
}

// LoRA layers with random A and B (B non-zero), on the host.
struct HostLora {
  std::deque<LoraLayer> layers;
  // Layers of these ranks on a layer of n_in -> n_out.
  std::vector<const LoraLayer*> add(int64_t n_in, int64_t n_out, std::vector<int64_t> ranks,
                                    uint64_t seed) {
    std::vector<const LoraLayer*> added;
    for (int64_t r : ranks) {
      layers.push_back(
          {n_in, n_out, r, randn(r * n_in, seed++, 0.05f), randn(n_out * r, seed++, 0.05f)});
      added.push_back(&layers.back());
    }
    return added;
  }
};

// Host LoRA layers as the branches of a backend (their A and B uploaded as its tensors), each
// applied with scale 2 / rank.
struct Branches {
  std::vector<TensorPtr> tensors;
  std::vector<LoraBranch> br;
  Branches(Backend& b, const std::vector<const LoraLayer*>& layers) {
    for (const LoraLayer* l : layers) {
      TensorPtr a = upload(b, "lora_a", l->rank, l->n_in, l->a);
      TensorPtr bt = upload(b, "lora_b", l->n_out, l->rank, l->b);
      br.push_back({a.get(), bt.get(), nullptr, nullptr, 2.0f / float(l->rank)});
      tensors.push_back(std::move(a));
      tensors.push_back(std::move(bt));
    }
  }
};

// ---- The op table ----------------------------------------------------------------------------

// Runs one op (or a few) on a backend from fixed inputs and returns the results to compare.
using Runner = std::function<std::vector<Out>(Backend&)>;

struct OpCase {
  OpCase(std::string n, std::function<Runner()> b, std::string r = "")
      : name(std::move(n)), build(std::move(b)), may_refuse(std::move(r)) {}
  OpCase(std::string n, Runner run) : OpCase(std::move(n), [run] { return run; }) {}
  std::string name;
  std::function<Runner()> build;  // makes the host weights, shared by every run of the runner
  // Non-empty: the Vulkan backend may refuse the case with an error naming one of these
  // ('|'-separated) instead of computing it.
  std::string may_refuse;
};

// One layer of a linear case: ternary (one scale, or TQ2_0 per-block scales) or merged float.
struct Layer {
  Layer(DType t, int64_t n, float s = 1, std::vector<int64_t> r = {}, bool blocks = false,
        int64_t row_in = 0)
      : type(t),
        n_out(n),
        out_scale(s),
        lora_ranks(std::move(r)),
        block_scales(blocks),
        row_in(row_in) {}
  DType type;
  int64_t n_out;
  float out_scale;
  std::vector<int64_t> lora_ranks;
  bool block_scales;
  int64_t row_in;  // rows stored padded to this width (TernaryMatrix::row_in); 0: the input's
};

// The layers share one input of n tokens x kIn and run in one linear call. kIn: three blocks of
// 256 (not a power of two); at 64 KiB the input takes 21 rows a piece and a ternary weight 341
// (codes of 192 bytes a row), so layers of more outputs come in several pieces.
constexpr int64_t kIn = 768;

OpCase linear_case(std::string name, int64_t n, bool act_quant, double tol,
                   std::vector<Layer> layers, std::string may_refuse = "", int64_t n_in = kIn) {
  return {name,
          [=] {
            auto ws = std::make_shared<std::vector<std::unique_ptr<HostWeight>>>();
            auto lora = std::make_shared<HostLora>();
            auto branches = std::make_shared<std::vector<std::vector<const LoraLayer*>>>();
            for (size_t k = 0; k < layers.size(); ++k) {
              const Layer& l = layers[k];
              ws->push_back(
                  dtype_traits(l.type).ternary
                      ? ternary_weight(l.type, n_in, l.n_out, l.block_scales, 80 + k, l.row_in)
                      : float_weight(l.type, n_in, l.n_out, 80 + k));
              ws->back()->w.out_scale = l.out_scale;
              branches->push_back(lora->add(n_in, l.n_out, l.lora_ranks, 90 + 2 * k));
            }
            return Runner([=](Backend& b) {
              TensorPtr x = upload(b, "x", n + 3, n_in, randn((n + 3) * n_in, 11));  // n count
              std::vector<TensorPtr> ys;
              std::deque<Branches> lora_of;  // the LoRA branches of each layer on b
              std::vector<LinearOp> ops;
              for (size_t k = 0; k < ws->size(); ++k) {
                const LinearWeight& w = (*ws)[k]->w;
                ys.push_back(b.tensor(cat("y_", w.name), n + 3, w.m.n_out));
                lora_of.emplace_back(b, (*branches)[k]);
                ops.push_back({&w, ys.back().get(), lora_of.back().br});
              }
              b.linear(ops, *x, n, LinearMode{.act_quant = act_quant});
              std::vector<Out> outs;
              for (const TensorPtr& y : ys) outs.push_back(download(b, *y, n, tol));
              (void)lora;
              return outs;
            });
          },
          may_refuse};
}

OpCase rms_norm_case(int64_t n, int64_t cols, bool in_place) {
  return {cat("rms_norm_", n, "x", cols, in_place ? "_in_place" : ""), [=] {
            auto g = std::make_shared<std::vector<float>>(randn(cols, 21, 0.1f));
            for (float& v : *g) v += 1.0f;
            return Runner([=](Backend& b) {
              std::vector<float> xv = randn((n + 2) * cols, 22);
              for (int64_t t = 0; t < n + 2; ++t) {  // rows of very different magnitudes
                for (int64_t j = 0; j < cols; ++j)
                  xv[size_t(t * cols + j)] *= std::ldexp(1.0f, int(t % 17) - 8);
              }
              TensorPtr x = upload(b, "x", n + 2, cols, xv);
              TensorPtr y = in_place ? nullptr : b.tensor("y", n + 2, cols);
              b.rms_norm(
                  {.x = x.get(), .g = g->data(), .eps = 1e-5f, .y = in_place ? x.get() : y.get()},
                  n);
              return std::vector<Out>{download(b, in_place ? *x : *y, n, 1e-5)};
            });
          }};
}

// 301 tokens (the first and last rows of the table among them) from a table of 2050 x 256: at
// 64 KiB 33 pieces in f32 (q6_K becomes f32), 17 in f16 and bf16, 9 in q8_0; the output 5.
OpCase embedding_case(DType type) {
  const bool q6 = type == DType::Q6_K;
  return {cat("embedding_", dtype_name(type)),
          [=] {
            auto bytes = std::make_shared<std::vector<uint8_t>>();
            const FloatMatrix table = float_matrix(*bytes, type, 256, 2050, 31, 0.5f);
            return Runner([=](Backend& b) {
              std::mt19937_64 rng(32);
              std::vector<int32_t> ids(301);
              for (int32_t& id : ids) id = int32_t(rng() % 2050);
              ids.front() = 0, ids.back() = 2049, ids[1] = ids[2];
              TensorPtr out = b.tensor("out", 303, 256);
              b.embedding(*out, table, ids.data(), 301);
              (void)bytes;
              return std::vector<Out>{download(b, *out, 301, 0)};
            });
          },
          q6 ? "q6_k" : ""};
}

// rope of q and k; rope_dim < head_dim rotates the first rope_dim dimensions of each head.
OpCase rope_case(int64_t n, int64_t pos0, int64_t rope_dim, float theta) {
  return {cat("rope_", n, "_pos", pos0, "_dim", rope_dim), [=](Backend& b) {
            const AttnShape shape{.n_head = 16,
                                  .n_head_kv = 4,
                                  .head_dim = 128,
                                  .rope_dim = rope_dim,
                                  .rope_theta = theta};
            TensorPtr q = upload(b, "q", n + 1, 2048, randn((n + 1) * 2048, 41));
            TensorPtr k = upload(b, "k", n + 1, 512, randn((n + 1) * 512, 42));
            b.rope(*q, 0, n, shape.n_head, shape, pos0);
            b.rope(*k, 0, n, shape.n_head_kv, shape, pos0);
            return std::vector<Out>{download(b, *q, n, 0), download(b, *k, n, 0)};
          }};
}

// store_kv of n new positions at pos0 into caches of 520 positions, then attention with
// group * n_kv query heads of 64 over n_kv = min(4, 8 / group) KV heads: group 1 has 4 query
// heads, group 4 has 8. Cache rows of at most 1 KB keep whole attention chunks (64 positions) in
// each piece at 64 KiB, so that the chunks, and the order their partials merge in, are those of
// the unlimited run. At 64 KiB the caches come in 9 (group 1) or 5 (group 4) pieces, q and out of
// 77 tokens in 2 or 3; at 512 KiB the caches of group 1 in 2.
// With f16 caches (KvType::F16) the stored halves are bit-identical too (both round to nearest
// even), and attention reads them as the CPU does.
OpCase attention_case(int64_t group, int64_t n, int64_t pos0, KvType type = KvType::F32) {
  return {cat("attention_group", group, "_n", n, "_pos", pos0, type == KvType::F16 ? "_f16" : ""),
          [=](Backend& b) {
            const int64_t n_kv = std::min<int64_t>(4, 8 / group);
            const AttnShape shape{
                .n_head = group * n_kv, .n_head_kv = n_kv, .head_dim = 64, .rope_dim = 64};
            const int64_t n_ctx = 520, kv = shape.kv_cols(), d = shape.q_cols();
            TensorPtr kc = b.tensor("k_cache", n_ctx, kv, kv_use(type));
            TensorPtr vc = b.tensor("v_cache", n_ctx, kv, kv_use(type));
            b.write(*kc, 0, n_ctx, randn(n_ctx * kv, 51).data());
            b.write(*vc, 0, n_ctx, randn(n_ctx * kv, 52).data());
            TensorPtr k = upload(b, "k", n + 2, kv, randn((n + 2) * kv, 53));
            TensorPtr v = upload(b, "v", n + 2, kv, randn((n + 2) * kv, 54));
            TensorPtr q = upload(b, "q", n + 2, d, randn((n + 2) * d, 55));
            TensorPtr out = b.tensor("out", n + 2, d);
            b.store_kv(*kc, *k, 0, n, pos0);
            b.store_kv(*vc, *v, 0, n, pos0);
            b.attention(*out, *q, *kc, *vc, std::vector<SeqRows>{{0, n, pos0, 0}}, shape);
            return std::vector<Out>{download(b, *out, n, 1e-5, true), download(b, *kc, n_ctx, 0),
                                    download(b, *vc, n_ctx, 0)};
          }};
}

// One decoding row for each of 4 sequences of one pool (bases 128 apart, on chunk boundaries),
// f32 or f16: on a device, one dispatch for all of them.
OpCase attention_decode_case(KvType type) {
  return {cat("attention_decode", type == KvType::F16 ? "_f16" : ""), [=](Backend& b) {
            const AttnShape shape{.n_head = 8, .n_head_kv = 2, .head_dim = 64, .rope_dim = 64};
            const int64_t n_ctx = 520, kv = shape.kv_cols(), d = shape.q_cols();
            TensorPtr kc = b.tensor("k_cache", n_ctx, kv, kv_use(type));
            TensorPtr vc = b.tensor("v_cache", n_ctx, kv, kv_use(type));
            b.write(*kc, 0, n_ctx, randn(n_ctx * kv, 63).data());
            b.write(*vc, 0, n_ctx, randn(n_ctx * kv, 64).data());
            TensorPtr q = upload(b, "q", 4, d, randn(4 * d, 65));
            TensorPtr out = b.tensor("out", 4, d);
            const std::vector<SeqRows> seqs = {
                {0, 1, 5, 0}, {1, 1, 100, 128}, {2, 1, 64, 256}, {3, 1, 127, 384}};
            b.attention(*out, *q, *kc, *vc, seqs, shape);
            return std::vector<Out>{download(b, *out, 4, 1e-5, true)};
          }};
}

// A decoding step's rope and KV store for 5 sequences of one pool (rows 128 apart, positions
// 0..100), then for one sequence of 7 tokens: q rotated and the caches' rows, f32 or f16.
OpCase rope_store_kv_case(KvType type) {
  return {cat("rope_store_kv", type == KvType::F16 ? "_f16" : ""), [=](Backend& b) {
            const AttnShape shape{
                .n_head = 8, .n_head_kv = 2, .head_dim = 64, .rope_dim = 64, .rope_theta = 1e4f};
            const int64_t n_ctx = 640, kv = shape.kv_cols(), d = shape.q_cols(), n = 7;
            TensorPtr kc = b.tensor("k_cache", n_ctx, kv, kv_use(type));
            TensorPtr vc = b.tensor("v_cache", n_ctx, kv, kv_use(type));
            TensorPtr q = upload(b, "q", n, d, randn(n * d, 56));
            TensorPtr k = upload(b, "k", n, kv, randn(n * kv, 57));
            TensorPtr v = upload(b, "v", n, kv, randn(n * kv, 58));
            std::vector<SeqRows> decode;
            for (int64_t i = 0; i < 5; ++i) decode.push_back({i, 1, i * 25, i * 128});
            b.rope_store_kv(*q, *k, *v, *kc, *vc, decode, shape);
            // k's contents after the op are unspecified: the prompt's keys are a fresh copy.
            TensorPtr k2 = upload(b, "k2", n, kv, randn(n * kv, 59));
            const SeqRows prompt[] = {{0, n, 3, 512}};
            b.rope_store_kv(*q, *k2, *v, *kc, *vc, prompt, shape);
            return std::vector<Out>{download(b, *q, n, 0), download(b, *kc, n_ctx, 0),
                                    download(b, *vc, n_ctx, 0)};
          }};
}

OpCase gated_act_case(Activation act) {
  return {cat("gated_act_", activation_name(act)), [=](Backend& b) {
            const int64_t n = 101, cols = 1408;
            TensorPtr gate = upload(b, "gate", n, cols, randn(n * cols, 61, 2.0f));
            TensorPtr up = upload(b, "up", n, cols, randn(n * cols, 62));
            TensorPtr out = b.tensor("out", n, cols);
            b.gated_act(*out, *gate, *up, n - 1, act);
            return std::vector<Out>{download(b, *out, n - 1, act == Activation::Relu2 ? 0 : 1e-5)};
          }};
}

// The LM head of a 1030 x 256 matrix for rows [5, 88) and the last row alone: at 64 KiB the
// weights come in 5 (q8_0) to 17 (f32, q6_K as f32) pieces, the input in 2 and the logits in
// segments of 15 rows; at 512 KiB the f16 weights in 2, the f32 ones in 3.
OpCase head_case(DType type, std::vector<int64_t> lora_ranks) {
  return {cat("head_", dtype_name(type), lora_ranks.empty() ? "" : "_lora"),
          [=] {
            auto bytes = std::make_shared<std::vector<uint8_t>>();
            const FloatMatrix w = float_matrix(*bytes, type, 256, 1030, 71, 0.05f);
            auto keep = std::make_shared<HostLora>();
            auto lora = std::make_shared<std::vector<const LoraLayer*>>(
                keep->add(256, 1030, lora_ranks, 72));
            return Runner([=](Backend& b) {
              TensorPtr x = upload(b, "x", 90, 256, randn(90 * 256, 73));
              const Branches branches(b, *lora);
              Out rows{"logits rows 5..87", 1030, std::vector<float>(83 * 1030), 1e-5};
              Out last{"logits row 89", 1030, std::vector<float>(1030), 1e-5};
              b.head({.h = x.get(),
                      .row0 = 5,
                      .n = 83,
                      .w = &w,
                      .lora = branches.br,
                      .logits = rows.v.data()});
              b.head({.h = x.get(),
                      .row0 = 89,
                      .n = 1,
                      .w = &w,
                      .lora = branches.br,
                      .logits = last.v.data()});
              (void)bytes, (void)keep;
              return std::vector<Out>{rows, last};
            });
          },
          type == DType::Q6_K ? "q6_k" : ""};
}

std::vector<OpCase> op_cases() {
  const DType TQ2 = DType::TQ2_0, I2S = DType::I2_S;
  std::vector<OpCase> c;
  // 1031 rows of 256 (17 pieces at 64 KiB, 3 at 512 KiB); rows of 77 floats (not aligned).
  c.push_back({"write_read", [](Backend& b) {
                 TensorPtr t = upload(b, "t", 1031, 256, randn(1031 * 256, 1));
                 b.write(*t, 100, 301, randn(301 * 256, 2).data());  // across pieces
                 Out part{"rows 50..749", 256, std::vector<float>(700 * 256), 0, true};
                 b.read(*t, 50, 700, part.v.data());
                 TensorPtr odd = upload(b, "odd", 333, 77, randn(333 * 77, 3));
                 return std::vector<Out>{download(b, *t, 1031, 0), part, download(b, *odd, 333, 0)};
               }});
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q6_K})
    c.push_back(embedding_case(t));
  c.push_back(rms_norm_case(101, 2048, false));
  c.push_back(rms_norm_case(83, 2560, true));
  // Rows the shader cannot hold in registers: not whole vec4s, and wider than 8192.
  c.push_back(rms_norm_case(41, 2054, true));
  c.push_back(rms_norm_case(37, 9000, false));
  // Ternary layers, W1.58A8: bit-identical with one scale per tensor (out_scale included).
  // Layers of 352 to 768 outputs come in 2 or 3 pieces at 64 KiB, the last one partial.
  c.push_back(linear_case("linear_tq2_0_101x768x512", 101, true, 0, {{TQ2, 512}}));
  c.push_back(linear_case("linear_tq2_0_qkv_out_scale", 45, true, 0,
                          {{TQ2, 768, 1.25f}, {TQ2, 256}, {TQ2, 256}}));
  c.push_back(linear_case("linear_i2_s_qkv_out_scale", 45, true, 0,
                          {{I2S, 768}, {I2S, 256, 0.75f}, {I2S, 256}}));
  c.push_back(linear_case("linear_i2_s_768x704", 37, true, 0, {{I2S, 704}}));
  // Widths no multiple of 256 (1bitLLM's 3B: 3200, 8640): an I2_S row of 384 (runs of 128),
  // padded on the device, and rows of 864 the host stored padded to 1024, with a LoRA branch.
  c.push_back(linear_case("linear_i2_s_384_wide", 37, true, 0, {{I2S, 512}}, "", 384));
  c.push_back(linear_case("linear_tq2_0_864_wide_padded", 37, true, 1e-5,
                          {{TQ2, 320, 1, {4}, false, 1024}}, "", 864));
  c.push_back(linear_case("linear_tq2_0_864_wide_padded_float_acts", 9, false, 1e-5,
                          {{TQ2, 320, 1, {}, false, 1024}}, kActWords, 864));
  c.push_back(linear_case("linear_tq2_0_block_scales", 45, true, 1e-5, {{TQ2, 704, 1, {}, true}}));
  // TQ1_0 read from its own layout (converted to the shaders' codes at upload).
  c.push_back(linear_case("linear_tq1_0_qkv_blocks", 45, true, 1e-5,
                          {{DType::TQ1_0, 512, 1, {}, true}, {DType::TQ1_0, 256}}));
  // Float activations (--act-quant none).
  c.push_back(linear_case("linear_tq2_0_float_acts", 37, false, 1e-5,
                          {{TQ2, 352}, {TQ2, 128, 0.5f}, {TQ2, 128, 1, {}, true}}, kActWords));
  c.push_back(linear_case("linear_i2_s_float_acts", 37, false, 1e-5, {{I2S, 352}}, kActWords));
  // LoRA branches (ranks 4 and 16; out_scale does not scale them) on layers sharing an input.
  c.push_back(linear_case("linear_tq2_0_lora", 45, true, 1e-5,
                          {{TQ2, 768, 1.5f, {4, 16}}, {TQ2, 256, 1, {16}}}));
  c.push_back(
      linear_case("linear_i2_s_lora_float_acts", 37, false, 1e-5, {{I2S, 256, 1, {4}}}, kActWords));
  // Merged (float) layers: f16, f32 (1 MB: pieces even at 512 KiB) with LoRA, bf16.
  c.push_back(linear_case("linear_float_merged", 37, true, 1e-5,
                          {{DType::F16, 352}, {DType::F32, 352, 0.5f, {4}}, {DType::BF16, 128}}));
  c.push_back(rope_case(101, 0, 128, 10000.0f));
  c.push_back(rope_case(83, 1000, 64, 500000.0f));
  for (int64_t group : {1, 4}) {
    for (auto [n, pos0] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {1, 1}, {1, 500}, {77, 0}, {77, 200}})
      c.push_back(attention_case(group, n, pos0));
    c.push_back(attention_case(group, 1, 500, KvType::F16));
    c.push_back(attention_case(group, 77, 200, KvType::F16));
  }
  c.push_back(attention_decode_case(KvType::F32));
  c.push_back(attention_decode_case(KvType::F16));
  c.push_back(rope_store_kv_case(KvType::F32));
  c.push_back(rope_store_kv_case(KvType::F16));
  c.push_back(gated_act_case(Activation::Relu2));
  c.push_back(gated_act_case(Activation::Silu));
  c.push_back({"add", [](Backend& b) {
                 TensorPtr y = upload(b, "y", 302, 512, randn(302 * 512, 111));
                 TensorPtr x = upload(b, "x", 302, 512, randn(302 * 512, 112));
                 b.add(*y, *x, 301);
                 return std::vector<Out>{download(b, *y, 302, 0)};  // row 301 untouched
               }});
  c.push_back(head_case(DType::F16, {}));
  c.push_back(head_case(DType::F32, {4, 16}));
  c.push_back(head_case(DType::Q8_0, {}));
  c.push_back(head_case(DType::Q6_K, {}));
  return c;
}

void PrintTo(const OpCase& c, std::ostream* os) {
  *os << c.name;
}

class VulkanOps : public ::testing::TestWithParam<std::tuple<OpCase, uint64_t>> {};

TEST_P(VulkanOps, MatchCpu) {
  const auto& [c, limit] = GetParam();
  const Runner run = c.build();  // first: the host weights outlive the backends
  std::unique_ptr<Backend> vk;
  open_vulkan(limit, &vk);
  if (!vk) return;
  ThreadPool pool(n_threads());
  CpuBackend cpu(pool);
  const std::vector<Out> want = run(cpu);
  std::vector<Out> got;
  try {
    got = run(*vk);
  } catch (const Error& e) {
    if (c.may_refuse.empty()) FAIL() << c.name << ": " << e.what();
    EXPECT_TRUE(names_one_of(e.what(), c.may_refuse))
        << "the error should name " << c.may_refuse << ": " << e.what();
    GTEST_SKIP() << "the Vulkan backend refuses " << c.name << ": " << e.what();
  }
  ASSERT_EQ(got.size(), want.size());
  const std::string where = cat(c.name, " at binding limit ", limit_name(limit));
  for (size_t k = 0; k < want.size(); ++k) expect_match(want[k], got[k].v, want[k].tol, where);
  // Results that must not depend on tiling equal the unlimited (untiled) run bit for bit.
  if (limit == 0 || std::none_of(want.begin(), want.end(), [](auto& o) { return o.invariant; }))
    return;
  std::unique_ptr<Backend> whole;
  open_vulkan(0, &whole);
  if (!whole) return;
  const std::vector<Out> untiled = run(*whole);
  for (size_t k = 0; k < want.size(); ++k) {
    if (want[k].invariant) expect_match(untiled[k], got[k].v, 0, where + " against unlimited");
  }
}

INSTANTIATE_TEST_SUITE_P(VulkanLimits, VulkanOps,
                         ::testing::Combine(::testing::ValuesIn(op_cases()),
                                            ::testing::Values(64 * KiB, 512 * KiB, uint64_t(0))),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" +
                                  limit_name(std::get<1>(info.param));
                         });

// write() of a small tensor is queued with the other work (no submission of its own): an op
// recorded before it must still see the old contents, one after it the new, decoding-sized ops
// included; a large write is staged at once, after the queued work.
TEST(VulkanWrite, QueuedWritesKeepTheOrderOfTheWork) {
  std::unique_ptr<Backend> vk;
  open_vulkan(0, &vk);
  if (!vk) return;
  const int64_t n = 4, cols = 256;
  const std::vector<float> a = randn(n * cols, 401), b = randn(n * cols, 402);
  std::vector<float> want(size_t(n * cols));
  for (size_t i = 0; i < want.size(); ++i) want[i] = (0.0f + a[i]) + b[i];
  TensorPtr x = upload(*vk, "x", n, cols, a);
  TensorPtr y = vk->tensor("y", n, cols);
  vk->add(*y, *x, n);  // y = a (four rows: a decoding-sized add)
  vk->write(*x, 0, n, b.data());
  vk->add(*y, *x, n);  // y = a + b
  expect_match({"y", cols, want}, download(*vk, *y, n, 0).v, 0, "queued writes");
  // A write larger than the queued ones (8 MiB), after queued work that reads the tensor.
  const int64_t big = 8192;
  const std::vector<float> c = randn(big * cols, 403), d = randn(big * cols, 404);
  TensorPtr u = upload(*vk, "u", big, cols, c);
  TensorPtr v = vk->tensor("v", big, cols);
  vk->add(*v, *u, big);  // v = c
  vk->write(*u, 0, big, d.data());
  vk->add(*v, *u, big);  // v = c + d
  std::vector<float> want2(c.size());
  for (size_t i = 0; i < want2.size(); ++i) want2[i] = (0.0f + c[i]) + d[i];
  expect_match({"v", cols, want2}, download(*vk, *v, big, 0).v, 0, "large write");
}
// ---- Attention of a prompt and of its tokens one by one ----------------------------------------
// attention.comp serves several queries per workgroup for prompts and one when decoding (whose
// last workgroup of a query merges the partials that attention_combine merges for prompts);
// every partial and merge is computed alike either way, so the outputs agree bit for bit (with
// whole and partial groups of queries, head sizes of whole, several and partial staged key blocks,
// GQA, and a KV cache in pieces).
TEST(VulkanAttention, PromptEqualsItsTokensOneByOne) {
  // 256 KiB: caches in pieces of 128 to 256 positions.
  for (uint64_t limit : {uint64_t(0), 256 * KiB}) {
    for (auto [n_head, n_embd] : {std::pair{8, 512}, {16, 2048}, {8, 640}}) {
      std::unique_ptr<Backend> b;
      open_vulkan(limit, &b);
      if (!b) return;
      const AttnShape shape{
          .n_head = n_head, .n_head_kv = 4, .head_dim = n_embd / n_head, .rope_dim = 32};
      const int64_t n_ctx = 300, kv = shape.kv_cols(), n = 20, pos0 = 230;
      TensorPtr kc = upload(*b, "cache_k", n_ctx, kv, randn(n_ctx * kv, 601));
      TensorPtr vc = upload(*b, "cache_v", n_ctx, kv, randn(n_ctx * kv, 602));
      const std::vector<float> qv = randn(n * n_embd, 603);
      TensorPtr q = upload(*b, "q", n, n_embd, qv);
      TensorPtr out = b->tensor("out", n, n_embd);
      b->attention(*out, *q, *kc, *vc, std::vector<SeqRows>{{0, n, pos0, 0}}, shape);
      const std::vector<float> prompt = download(*b, *out, n, 0).v;
      std::vector<float> one_by_one;
      for (int64_t t = 0; t < n; ++t) {
        TensorPtr q1 =
            upload(*b, "q1", 1, n_embd,
                   std::vector<float>(qv.begin() + t * n_embd, qv.begin() + (t + 1) * n_embd));
        TensorPtr o1 = b->tensor("o1", 1, n_embd);
        b->attention(*o1, *q1, *kc, *vc, std::vector<SeqRows>{{0, 1, pos0 + t, 0}}, shape);
        const std::vector<float> row = download(*b, *o1, 1, 0).v;
        one_by_one.insert(one_by_one.end(), row.begin(), row.end());
      }
      expect_match({"prompt", n_embd, prompt}, one_by_one, 0,
                   cat("head_dim ", n_embd / n_head, " at ", limit_name(limit)));
      // Three tokens a call: decoding workgroups (one query each) that merge their partials
      // themselves, several queries' counters in one dispatch.
      std::vector<float> by_three;
      for (int64_t t = 0; t < n; t += 3) {
        const int64_t m = std::min<int64_t>(3, n - t);
        TensorPtr q3 =
            upload(*b, "q3", m, n_embd,
                   std::vector<float>(qv.begin() + t * n_embd, qv.begin() + (t + m) * n_embd));
        TensorPtr o3 = b->tensor("o3", m, n_embd);
        b->attention(*o3, *q3, *kc, *vc, std::vector<SeqRows>{{0, m, pos0 + t, 0}}, shape);
        const std::vector<float> rows = download(*b, *o3, m, 0).v;
        by_three.insert(by_three.end(), rows.begin(), rows.end());
      }
      expect_match({"prompt", n_embd, prompt}, by_three, 0,
                   cat("three at a time, head_dim ", n_embd / n_head, " at ", limit_name(limit)));
    }
  }
}

}  // namespace
}  // namespace trit::engine
