// Backend parity (STYLE habit 5): every op of the Vulkan backend against the CPU backend (the
// reference) at binding limits that split tensors into several pieces, with a per-op threshold,
// and whole random models through Session. DESIGN sections 2 and 6: a quantised ternary matmul
// with a uniform scale, rope, relu2, add, embedding and store_kv are bit-identical to the CPU;
// rms_norm, float matmuls, attention and silu agree to 1e-5 of the largest value; nothing that
// is bit-identical, nor attention (its chunk merge order is fixed), depends on the limit.
// Without a Vulkan device or loader the tests skip, unless TRIT_REQUIRE_VULKAN=1 (CI) makes
// them fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iomanip>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/vulkan/context.h"
#include "backend/vulkan/coop_matrix.h"
#include "backend/vulkan/device_info.h"
#include "backend/vulkan/vulkan_backend.h"
#include "core/error.h"
#include "core/quant.h"
#include "infer/session.h"
#include "tools/create.h"
#include "model/lora_set.h"
#include "model/model.h"
#include "test_util.h"
#include "vulkan_test_util.h"

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

// LoRA layers with random A and B (B non-zero) and the terms that apply them.
struct HostLora {
  std::deque<LoraLayer> layers;
  std::vector<LoraTerm> add(int64_t n_in, int64_t n_out, std::vector<int64_t> ranks,
                            uint64_t seed) {
    std::vector<LoraTerm> terms;
    for (int64_t r : ranks) {
      layers.push_back(
          {n_in, n_out, r, randn(r * n_in, seed++, 0.05f), randn(n_out * r, seed++, 0.05f)});
      terms.push_back({&layers.back(), 2.0f / float(r)});
    }
    return terms;
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
  Layer(DType t, int64_t n, float s = 1, std::vector<int64_t> r = {}, bool blocks = false)
      : type(t), n_out(n), out_scale(s), lora_ranks(std::move(r)), block_scales(blocks) {}
  DType type;
  int64_t n_out;
  float out_scale;
  std::vector<int64_t> lora_ranks;
  bool block_scales;
};

// The layers share one input of n tokens x 2048 and run in one linear call.
OpCase linear_case(std::string name, int64_t n, bool act_quant, double tol,
                   std::vector<Layer> layers, std::string may_refuse = "") {
  return {name,
          [=] {
            auto ws = std::make_shared<std::vector<std::unique_ptr<HostWeight>>>();
            auto lora = std::make_shared<HostLora>();
            auto terms = std::make_shared<std::vector<std::vector<LoraTerm>>>();
            for (size_t k = 0; k < layers.size(); ++k) {
              const Layer& l = layers[k];
              ws->push_back(dtype_traits(l.type).ternary
                                ? ternary_weight(l.type, 2048, l.n_out, l.block_scales, 80 + k)
                                : float_weight(l.type, 2048, l.n_out, 80 + k));
              ws->back()->w.out_scale = l.out_scale;
              terms->push_back(lora->add(2048, l.n_out, l.lora_ranks, 90 + 2 * k));
            }
            return Runner([=](Backend& b) {
              TensorPtr x = upload(b, "x", n + 3, 2048, randn((n + 3) * 2048, 11));  // n count
              std::vector<TensorPtr> ys;
              std::vector<LinearOp> ops;
              for (size_t k = 0; k < ws->size(); ++k) {
                const LinearWeight& w = (*ws)[k]->w;
                ys.push_back(b.tensor(cat("y_", w.name), n + 3, w.m.n_out));
                ops.push_back({&w, ys.back().get(), (*terms)[k].empty() ? nullptr : &(*terms)[k]});
              }
              b.linear(ops, *x, n, act_quant);
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
              b.rms_norm(in_place ? *x : *y, *x, g->data(), n, 1e-5f);
              return std::vector<Out>{download(b, in_place ? *x : *y, n, 1e-5)};
            });
          }};
}

OpCase embedding_case(DType type) {
  const bool q6 = type == DType::Q6_K;
  return {cat("embedding_", dtype_name(type)),
          [=] {
            auto bytes = std::make_shared<std::vector<uint8_t>>();
            const FloatMatrix table = float_matrix(*bytes, type, 512, 8200, 31, 0.5f);
            return Runner([=](Backend& b) {
              std::mt19937_64 rng(32);
              std::vector<int32_t> ids(301);
              for (int32_t& id : ids) id = int32_t(rng() % 8200);
              ids.front() = 0, ids.back() = 8199, ids[1] = ids[2];
              TensorPtr out = b.tensor("out", 303, 512);
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
            HParams hp;
            hp.n_embd = 2048, hp.n_head = 16, hp.n_head_kv = 4, hp.rope_dim = rope_dim;
            hp.rope_theta = theta;
            TensorPtr q = upload(b, "q", n + 1, 2048, randn((n + 1) * 2048, 41));
            TensorPtr k = upload(b, "k", n + 1, 512, randn((n + 1) * 512, 42));
            b.rope(*q, n, hp.n_head, hp, pos0);
            b.rope(*k, n, hp.n_head_kv, hp, pos0);
            return std::vector<Out>{download(b, *q, n, 0), download(b, *k, n, 0)};
          }};
}

// store_kv of n new positions at pos0 into caches of 1040 positions x 512, then attention with
// n_head = 8 * group query heads of 64 over 8 KV heads.
OpCase attention_case(int64_t group, int64_t n, int64_t pos0) {
  return {cat("attention_group", group, "_n", n, "_pos", pos0), [=](Backend& b) {
            HParams hp;
            hp.n_head_kv = 8, hp.n_head = 8 * group, hp.n_embd = 64 * hp.n_head, hp.rope_dim = 64;
            const int64_t n_ctx = 1040, kv = hp.n_embd_kv(), d = hp.n_embd;
            TensorPtr kc = upload(b, "k_cache", n_ctx, kv, randn(n_ctx * kv, 51));
            TensorPtr vc = upload(b, "v_cache", n_ctx, kv, randn(n_ctx * kv, 52));
            TensorPtr k = upload(b, "k", n + 2, kv, randn((n + 2) * kv, 53));
            TensorPtr v = upload(b, "v", n + 2, kv, randn((n + 2) * kv, 54));
            TensorPtr q = upload(b, "q", n + 2, d, randn((n + 2) * d, 55));
            TensorPtr out = b.tensor("out", n + 2, d);
            b.store_kv(*kc, *k, n, pos0);
            b.store_kv(*vc, *v, n, pos0);
            b.attention(*out, *q, *kc, *vc, n, pos0, hp);
            return std::vector<Out>{download(b, *out, n, 1e-5, true), download(b, *kc, n_ctx, 0),
                                    download(b, *vc, n_ctx, 0)};
          }};
}

OpCase gated_act_case(Activation act) {
  return {cat("gated_act_", activation_name(act)), [=](Backend& b) {
            const int64_t n = 301, cols = 2816;
            TensorPtr gate = upload(b, "gate", n, cols, randn(n * cols, 61, 2.0f));
            TensorPtr up = upload(b, "up", n, cols, randn(n * cols, 62));
            TensorPtr out = b.tensor("out", n, cols);
            b.gated_act(*out, *gate, *up, n - 1, act);
            return std::vector<Out>{download(b, *out, n - 1, act == Activation::Relu2 ? 0 : 1e-5)};
          }};
}

// The LM head of an 8200 x 512 matrix for rows [5, 88) and the last row alone.
OpCase head_case(DType type, std::vector<int64_t> lora_ranks) {
  return {cat("head_", dtype_name(type), lora_ranks.empty() ? "" : "_lora"),
          [=] {
            auto bytes = std::make_shared<std::vector<uint8_t>>();
            const FloatMatrix w = float_matrix(*bytes, type, 512, 8200, 71, 0.05f);
            auto keep = std::make_shared<HostLora>();
            auto lora =
                std::make_shared<std::vector<LoraTerm>>(keep->add(512, 8200, lora_ranks, 72));
            return Runner([=](Backend& b) {
              TensorPtr x = upload(b, "x", 90, 512, randn(90 * 512, 73));
              const std::vector<LoraTerm>* terms = lora->empty() ? nullptr : lora.get();
              Out rows{"logits rows 5..87", 8200, std::vector<float>(83 * 8200), 1e-5};
              Out last{"logits row 89", 8200, std::vector<float>(8200), 1e-5};
              b.head(rows.v.data(), *x, 5, 83, w, terms);
              b.head(last.v.data(), *x, 89, 1, w, terms);
              (void)bytes, (void)keep;
              return std::vector<Out>{rows, last};
            });
          },
          type == DType::Q6_K ? "q6_k" : ""};
}

std::vector<OpCase> op_cases() {
  const DType TQ2 = DType::TQ2_0, I2S = DType::I2_S;
  std::vector<OpCase> c;
  c.push_back({"write_read", [](Backend& b) {
                 TensorPtr t = upload(b, "t", 1031, 2048, randn(1031 * 2048, 1));
                 b.write(*t, 100, 301, randn(301 * 2048, 2).data());  // across pieces
                 Out part{"rows 50..749", 2048, std::vector<float>(700 * 2048), 0, true};
                 b.read(*t, 50, 700, part.v.data());
                 TensorPtr odd = upload(b, "odd", 333, 77, randn(333 * 77, 3));
                 return std::vector<Out>{download(b, *t, 1031, 0), part, download(b, *odd, 333, 0)};
               }});
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q6_K})
    c.push_back(embedding_case(t));
  c.push_back(rms_norm_case(301, 2048, false));
  c.push_back(rms_norm_case(83, 2560, true));
  // Rows the shader cannot hold in registers: not whole vec4s, and wider than 8192.
  c.push_back(rms_norm_case(41, 2054, true));
  c.push_back(rms_norm_case(37, 9000, false));
  // Ternary layers, W1.58A8: bit-identical with one scale per tensor (out_scale included).
  c.push_back(linear_case("linear_tq2_0_301x2048x4096", 301, true, 0, {{TQ2, 4096}}));
  c.push_back(linear_case("linear_tq2_0_qkv_out_scale", 83, true, 0,
                          {{TQ2, 2048, 1.25f}, {TQ2, 512}, {TQ2, 512}}));
  c.push_back(linear_case("linear_i2_s_qkv_out_scale", 83, true, 0,
                          {{I2S, 2048}, {I2S, 512, 0.75f}, {I2S, 512}}));
  c.push_back(linear_case("linear_i2_s_2048x5632", 37, true, 0, {{I2S, 5632}}));
  c.push_back(linear_case("linear_tq2_0_block_scales", 83, true, 1e-5, {{TQ2, 2560, 1, {}, true}}));
  // Float activations (--act-quant none).
  c.push_back(linear_case("linear_tq2_0_float_acts", 83, false, 1e-5,
                          {{TQ2, 2560}, {TQ2, 512, 0.5f}, {TQ2, 512, 1, {}, true}}, kActWords));
  c.push_back(linear_case("linear_i2_s_float_acts", 83, false, 1e-5, {{I2S, 2048}}, kActWords));
  // LoRA terms (ranks 4 and 16; out_scale does not scale them) on layers sharing an input.
  c.push_back(linear_case("linear_tq2_0_lora", 83, true, 1e-5,
                          {{TQ2, 2048, 1.5f, {4, 16}}, {TQ2, 512, 1, {16}}}));
  c.push_back(
      linear_case("linear_i2_s_lora_float_acts", 83, false, 1e-5, {{I2S, 512, 1, {4}}}, kActWords));
  // Merged (float) layers: f16, f32 (21 MB: pieces even at 8 MiB) with LoRA, bf16.
  c.push_back(linear_case("linear_float_merged", 83, true, 1e-5,
                          {{DType::F16, 2560}, {DType::F32, 2560, 0.5f, {4}}, {DType::BF16, 512}}));
  c.push_back(rope_case(301, 0, 128, 10000.0f));
  c.push_back(rope_case(83, 1000, 64, 500000.0f));
  for (int64_t group : {1, 4}) {
    for (auto [n, pos0] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {1, 1}, {1, 1000}, {77, 0}, {77, 200}})
      c.push_back(attention_case(group, n, pos0));
  }
  c.push_back(gated_act_case(Activation::Relu2));
  c.push_back(gated_act_case(Activation::Silu));
  c.push_back({"add", [](Backend& b) {
                 TensorPtr y = upload(b, "y", 302, 2048, randn(302 * 2048, 111));
                 TensorPtr x = upload(b, "x", 302, 2048, randn(302 * 2048, 112));
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
                                            ::testing::Values(1 * MiB, 8 * MiB, 128 * MiB,
                                                              uint64_t(0))),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" +
                                  limit_name(std::get<1>(info.param));
                         });

// ---- Whole models through Session ------------------------------------------------------------

struct ModelCase {
  std::string name;
  DType type, embd;
  Activation act;
  bool tied, lora;
};

// Random A and B on every linear layer and the head.
LoraAdapter random_adapter(const HParams& hp, int64_t rank, uint64_t seed) {
  LoraAdapter ad;
  ad.alpha = 8.0f;
  auto add = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    ad.layers[name] = {n_in, n_out, rank, randn(rank * n_in, seed++, 0.05f),
                       randn(n_out * rank, seed++, 0.05f)};
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (const std::string& what : block_linear_names()) {
      auto [n_in, n_out] = block_linear_shape(hp, what);
      add(block_tensor_name(l, what), n_in, n_out);
    }
  }
  add("output.weight", hp.n_embd, hp.n_vocab);
  return ad;
}

struct Logits {
  std::vector<float> prompt;  // (77, n_vocab): one eval of the prompt, in batches of 32
  std::vector<float> steps;   // (6, n_vocab): then one token at a time
};

Logits run_model(const Model& m, Backend& b, const ForwardOptions& o) {
  const int64_t V = m.hparams().n_vocab;
  std::vector<int32_t> ids(77);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 131 + 7) % size_t(V));
  Session s(m, 96, b, o, 32);
  Logits r;
  s.eval(ids, r.prompt, true);
  for (int32_t t : {5, 900, 17, 17, 333, 2}) {
    std::vector<float> l;
    s.eval({t}, l);
    r.steps.insert(r.steps.end(), l.begin(), l.end());
  }
  return r;
}

// Top-1 identical at every position (unless the reference's own top two are within the
// tolerance) and max |difference| <= tol * (max - min of the reference logits).
void expect_logits_close(const std::vector<float>& want, const std::vector<float>& got, int64_t V,
                         double tol, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  const auto [lo, hi] = std::minmax_element(want.begin(), want.end());
  const double bound = tol * (*hi - *lo);
  double max_abs = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::isnan(got[i]) ? INFINITY : std::fabs(double(got[i]) - want[i]);
    if (e > max_abs) max_abs = e, worst = i;
  }
  EXPECT_LE(max_abs, bound) << what << ": max abs error " << max_abs << " ("
                            << max_abs / (*hi - *lo) << " of the logit range " << *hi - *lo
                            << ") at position " << worst / size_t(V) << ", logit "
                            << worst % size_t(V);
  for (size_t p = 0; p < want.size() / size_t(V); ++p) {
    const float* w = want.data() + p * size_t(V);
    const float* g = got.data() + p * size_t(V);
    const int64_t a = std::max_element(w, w + V) - w, b = std::max_element(g, g + V) - g;
    if (a != b) {
      EXPECT_LE(w[a] - w[b], bound)
          << what << ": position " << p << ": top-1 " << b << ", the CPU's is " << a << " (" << w[a]
          << " vs " << w[b] << ")";
    }
  }
}

void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << c.name;
}

class VulkanModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(VulkanModel, LogitsMatchCpuAtEveryLimit) {
  const ModelCase& c = GetParam();
  std::unique_ptr<Backend> vk;
  open_vulkan(0, &vk);
  if (!vk) return;
  test::TempDir dir;
  CreateOptions o;
  o.hp = *hparams_preset("tiny");  // 256 wide, 4 query and 2 KV heads, ffn 768
  o.hp.n_layer = 3, o.hp.n_vocab = 1000, o.hp.act = c.act, o.hp.tied_head = c.tied;
  o.type = c.type, o.embd_type = c.embd, o.seed = 5;
  create_random_model(o, dir.file("m.gguf"));
  auto model = Model::load(dir.file("m.gguf"));
  const LoraAdapter adapter = random_adapter(model->hparams(), 4, 6);
  std::vector<std::pair<const LoraAdapter*, float>> attached;
  if (c.lora) attached.emplace_back(&adapter, 1.0f);
  const LoraSet set = resolve_lora(attached, model->hparams());
  const int64_t V = model->hparams().n_vocab;
  ThreadPool pool(n_threads());
  CpuBackend cpu(pool);
  for (bool act_quant : {false, true}) {
    // Float activations: only f32 rounding differs. W1.58A8: a last-bit difference in rms_norm,
    // attention or silu flips the int8 rounding of an activation now and then, which moves the
    // logits of these random models by up to ~1e-2 of their range (measured with 1-ulp noise).
    const double tol = act_quant ? 3e-2 : 1e-4;
    const std::string what = cat(c.name, act_quant ? " W1.58A8" : " float activations");
    const ForwardOptions fo{act_quant, &set};
    const Logits want = run_model(*model, cpu, fo);
    Logits got;
    try {
      got = run_model(*model, *vk, fo);
    } catch (const Error& e) {
      if (act_quant || !names_one_of(e.what(), kActWords)) throw;
      std::fprintf(stderr, "note: %s: the Vulkan backend refuses: %s\n", what.c_str(), e.what());
      continue;
    }
    expect_logits_close(want.prompt, got.prompt, V, tol, what + " prompt");
    expect_logits_close(want.steps, got.steps, V, tol, what + " decoding");
    // DESIGN section 6: the result with any limit equals the untiled result.
    for (uint64_t limit : {1 * MiB, 64 * KiB}) {
      std::unique_ptr<Backend> tiled;
      open_vulkan(limit, &tiled);
      if (!tiled) return;
      const Logits t = run_model(*model, *tiled, fo);
      const std::string at =
          cat(what, " at binding limit ", limit_name(limit), " against unlimited");
      expect_match({"prompt logits", V, got.prompt}, t.prompt, 0, at);
      expect_match({"decoding logits", V, got.steps}, t.steps, 0, at);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(VulkanModels, VulkanModel,
                         ::testing::Values(ModelCase{"tq2_0_relu2_f16", DType::TQ2_0, DType::F16,
                                                     Activation::Relu2, true, false},
                                           ModelCase{"i2_s_silu_q8_0_untied_lora", DType::I2_S,
                                                     DType::Q8_0, Activation::Silu, false, true},
                                           ModelCase{"tq2_0_silu_f32_lora", DType::TQ2_0,
                                                     DType::F32, Activation::Silu, true, true},
                                           ModelCase{"i2_s_relu2_bf16", DType::I2_S, DType::BF16,
                                                     Activation::Relu2, true, false}),
                         [](const auto& info) { return info.param.name; });

// write() of a small tensor is queued with the other work (no submission of its own): an op
// recorded before it must still see the old contents, one after it the new, held-back decoding
// ops included; a large write is staged at once, after the queued work.
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
  vk->add(*y, *x, n);  // y = a (four rows: a decoding-sized add, held back)
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

// ---- Decoding fusions -------------------------------------------------------------------------
// A decoding step's fused kernels (vk_ops_decode.cpp: add + rms_norm, norm + quantiser, norm
// inside the matvec, several bitlinears in one matvec, gate/up + gated_act, bitlinear + residual
// add, rope + KV store) compute every value with the
// expression of the ops they replace, so their outputs equal those of the unfused ops
// (TRIT_VK_DECODE_FUSION=0) bit for bit. Each test also checks from the profile that the fused
// pipelines ran.

// Opens a Vulkan backend with the decoding fusions on or off; profile: the profile table is
// written to stderr when the backend closes.
void open_fusion(bool fused, uint64_t limit, bool profile, std::unique_ptr<Backend>* out) {
  setenv("TRIT_VK_DECODE_FUSION", fused ? "1" : "0", 1);
  if (profile) setenv("TRIT_VK_PROFILE", "1", 1);
  open_vulkan(limit, out);
  unsetenv("TRIT_VK_DECODE_FUSION");
  unsetenv("TRIT_VK_PROFILE");
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

// Two decoding steps of one block (n = 1) on 2048-wide layers with GQA, partial rope, an
// out_scale and relu2 or silu; the outputs of every op.
std::vector<Out> decode_block(Backend& b, Activation act) {
  static const auto wq = ternary_weight(DType::TQ2_0, 2048, 2048, false, 301);
  static const auto wk = ternary_weight(DType::I2_S, 2048, 512, false, 302);
  static const auto wv = ternary_weight(DType::TQ2_0, 2048, 512, false, 303);
  static const auto wo = ternary_weight(DType::TQ2_0, 2048, 2048, false, 304);
  static const auto wg = ternary_weight(DType::TQ2_0, 2048, 2816, false, 305);
  static const auto wu = ternary_weight(DType::TQ2_0, 2048, 2816, false, 306);
  static const auto wd = ternary_weight(DType::TQ2_0, 2816, 2048, false, 307);
  wk->w.out_scale = 1.25f;
  HParams hp;
  hp.n_embd = 2048, hp.n_head = 16, hp.n_head_kv = 4, hp.rope_dim = 96, hp.rope_theta = 10000;
  const std::vector<float> g1 = randn(2048, 311, 0.1f), g2 = randn(2816, 312, 0.1f);
  TensorPtr x = upload(b, "x", 1, 2048, randn(2048, 313));
  TensorPtr proj = upload(b, "proj", 1, 2048, randn(2048, 314));
  TensorPtr h = b.tensor("h", 1, 2048), q = b.tensor("q", 1, 2048);
  TensorPtr k = b.tensor("k", 1, 512), v = b.tensor("v", 1, 512);
  TensorPtr kc = upload(b, "cache_k", 64, 512, randn(64 * 512, 315));
  TensorPtr vc = upload(b, "cache_v", 64, 512, randn(64 * 512, 316));
  TensorPtr attn = b.tensor("attn", 1, 2048);
  TensorPtr gate = b.tensor("gate", 1, 2816), up = b.tensor("up", 1, 2816);
  TensorPtr a = b.tensor("act", 1, 2816);
  for (int64_t pos : {40, 41}) {
    b.add(*x, *proj, 1);
    b.rms_norm(*h, *x, g1.data(), 1, 1e-5f);
    const LinearOp qkv[] = {
        {&wq->w, q.get(), nullptr}, {&wk->w, k.get(), nullptr}, {&wv->w, v.get(), nullptr}};
    b.linear(qkv, *h, 1, true);
    b.rope_store_kv(*q, *k, *v, *kc, *vc, 1, pos, hp);
    b.attention(*attn, *q, *kc, *vc, 1, pos, hp);
    b.rms_norm(*h, *attn, g1.data(), 1, 1e-5f);
    const LinearOp o[] = {{&wo->w, proj.get(), nullptr}};
    b.linear(o, *h, 1, true);
    b.add(*x, *proj, 1);
    b.rms_norm(*h, *x, g1.data(), 1, 1e-5f);
    const LinearOp gu[] = {{&wg->w, gate.get(), nullptr}, {&wu->w, up.get(), nullptr}};
    b.linear(gu, *h, 1, true);
    b.gated_act(*a, *gate, *up, 1, act);
    // In place (the norm cannot go into the matvec) at 40, into gate as forward.cpp does at 41.
    DeviceTensor& normed = pos == 40 ? *a : *gate;
    b.rms_norm(normed, *a, g2.data(), 1, 1e-5f);
    const LinearOp down[] = {{&wd->w, proj.get(), nullptr}};
    b.linear(down, normed, 1, true);
  }
  b.add(*x, *proj, 1);
  b.rms_norm(*h, *x, g1.data(), 1, 1e-5f);  // recorded when read
  std::vector<Out> outs;
  for (const TensorPtr* t : {&x, &h, &q, &attn, &gate, &up, &a, &proj}) {
    outs.push_back(download(b, **t, 1, 0));
  }
  outs.push_back(download(b, *kc, 64, 0));
  outs.push_back(download(b, *vc, 64, 0));
  return outs;
}

TEST(VulkanDecodeFusion, BlockGivesTheBitsOfTheUnfusedOps) {
  for (Activation act : {Activation::Relu2, Activation::Silu}) {
    // 64 KiB: every weight in pieces, so the matvec takes several segments per dispatch.
    for (uint64_t limit : {uint64_t(0), 64 * KiB}) {
      const std::string what = cat(activation_name(act), " at ", limit_name(limit));
      std::unique_ptr<Backend> plain, fused;
      open_fusion(false, limit, false, &plain);
      if (!plain) return;
      open_fusion(true, limit, false, &fused);
      const std::vector<Out> want = decode_block(*plain, act);
      const std::vector<Out> got = decode_block(*fused, act);
      ASSERT_EQ(want.size(), got.size());
      for (size_t i = 0; i < want.size(); ++i) expect_match(want[i], got[i].v, 0, what);
    }
  }
  const std::string table = profiled(0, [](Backend& b) { decode_block(b, Activation::Silu); });
  for (const char* fused : {"matvec_norm_ternary", "matvec_ternary", "rms_norm_quant", "rope_kv"}) {
    EXPECT_NE(table.find(fused), std::string::npos) << fused << " did not run:\n" << table;
  }
  for (const char* replaced : {"gated_act", " add:", "rope:", "quantize_acts"}) {
    EXPECT_EQ(table.find(replaced), std::string::npos) << replaced << " ran:\n" << table;
  }
}

// A row wider than rms_norm holds in registers (9216): add + norm + quantiser read it from memory.
std::vector<Out> decode_wide(Backend& b) {
  static const auto w = ternary_weight(DType::TQ2_0, 9216, 64, false, 321);
  const std::vector<float> g = randn(9216, 322, 0.1f);
  TensorPtr x = upload(b, "x", 1, 9216, randn(9216, 323));
  TensorPtr r = upload(b, "r", 1, 9216, randn(9216, 324));
  TensorPtr h = b.tensor("h", 1, 9216), y = b.tensor("y", 1, 64);
  b.add(*x, *r, 1);
  b.rms_norm(*h, *x, g.data(), 1, 1e-5f);
  const LinearOp op[] = {{&w->w, y.get(), nullptr}};
  b.linear(op, *h, 1, true);
  b.add(*x, *r, 1);
  b.rms_norm(*h, *x, g.data(), 1, 1e-5f);
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
  EXPECT_NE(table.find("add_rms_norm_quant"), std::string::npos) << table;
  EXPECT_NE(table.find("add_rms_norm:"), std::string::npos) << table;
}

TEST(VulkanDecodeFusion, ModelsGiveTheBitsOfTheUnfusedOps) {
  test::TempDir dir;
  for (auto [type, act] :
       {std::pair{DType::TQ2_0, Activation::Relu2}, std::pair{DType::I2_S, Activation::Silu}}) {
    CreateOptions o;
    o.hp = *hparams_preset("tiny");
    o.hp.n_layer = 2, o.hp.n_vocab = 1000, o.hp.act = act;
    o.type = type, o.seed = 9;
    const std::string path = dir.file(cat(dtype_name(type), ".gguf"));
    create_random_model(o, path);
    auto model = Model::load(path);
    const ForwardOptions fo{true, nullptr};
    std::unique_ptr<Backend> plain, fused;
    open_fusion(false, 0, false, &plain);
    if (!plain) return;
    open_fusion(true, 0, false, &fused);
    const Logits want = run_model(*model, *plain, fo);
    const Logits got = run_model(*model, *fused, fo);
    const int64_t V = model->hparams().n_vocab;
    expect_match({"prompt logits", V, want.prompt}, got.prompt, 0, std::string(dtype_name(type)));
    expect_match({"decoding logits", V, want.steps}, got.steps, 0, std::string(dtype_name(type)));
    const std::string table = profiled(0, [&](Backend& b) { run_model(*model, b, fo); });
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
    setenv("TRIT_VK_SMALL_TILES", small, 1);
    std::unique_ptr<Backend> vk;
    open_vulkan(0, &vk);
    unsetenv("TRIT_VK_SMALL_TILES");
    std::vector<float> out;
    if (!vk) return out;
    TensorPtr x = upload(*vk, "x", n, 512, xv);
    TensorPtr y1 = vk->tensor("y1", n, 300), y2 = vk->tensor("y2", n, 300);
    const LinearOp ops[] = {{&uniform->w, y1.get(), nullptr}, {&blocks->w, y2.get(), nullptr}};
    vk->linear(ops, *x, n, true);
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

// ---- Attention of a prompt and of its tokens one by one ----------------------------------------
// attention.comp serves several queries per workgroup for prompts and one when decoding; every
// partial is computed alike either way, so the outputs agree bit for bit (with whole and
// partial groups of queries, head sizes of whole, several and partial staged key blocks, GQA,
// and a KV cache in pieces).
TEST(VulkanAttention, PromptEqualsItsTokensOneByOne) {
  // 256 KiB: caches in pieces of 128 to 256 positions.
  for (uint64_t limit : {uint64_t(0), 256 * KiB}) {
    for (auto [n_head, n_embd] : {std::pair{8, 512}, {16, 2048}, {8, 640}}) {
      std::unique_ptr<Backend> b;
      open_vulkan(limit, &b);
      if (!b) return;
      HParams hp;
      hp.n_head = n_head, hp.n_head_kv = 4, hp.n_embd = n_embd, hp.rope_dim = 32;
      const int64_t n_ctx = 300, kv = hp.n_embd_kv(), n = 20, pos0 = 230;
      TensorPtr kc = upload(*b, "cache_k", n_ctx, kv, randn(n_ctx * kv, 601));
      TensorPtr vc = upload(*b, "cache_v", n_ctx, kv, randn(n_ctx * kv, 602));
      const std::vector<float> qv = randn(n * n_embd, 603);
      TensorPtr q = upload(*b, "q", n, n_embd, qv);
      TensorPtr out = b->tensor("out", n, n_embd);
      b->attention(*out, *q, *kc, *vc, n, pos0, hp);
      const std::vector<float> prompt = download(*b, *out, n, 0).v;
      std::vector<float> one_by_one;
      for (int64_t t = 0; t < n; ++t) {
        TensorPtr q1 =
            upload(*b, "q1", 1, n_embd,
                   std::vector<float>(qv.begin() + t * n_embd, qv.begin() + (t + 1) * n_embd));
        TensorPtr o1 = b->tensor("o1", 1, n_embd);
        b->attention(*o1, *q1, *kc, *vc, 1, pos0 + t, hp);
        const std::vector<float> row = download(*b, *o1, 1, 0).v;
        one_by_one.insert(one_by_one.end(), row.begin(), row.end());
      }
      expect_match({"prompt", n_embd, prompt}, one_by_one, 0,
                   cat("head_dim ", n_embd / n_head, " at ", limit_name(limit)));
    }
  }
}

// ---- Cooperative matrices ---------------------------------------------------------------------
// matmul_ternary_coop sums the int8 products exactly on the device's matrix units and ends as
// matmul_ternary does, so its outputs equal the plain path's (TRIT_VK_COOPMAT=0) bit for bit.
// Devices without int8 cooperative matrices (lavapipe) skip this.

// coop: TRIT_VK_COOPMAT ("0" the plain path, "nv", "khr"); small: TRIT_VK_SMALL_TILES for both
// paths ("0" default tiles, "1" the small ones).
void open_coop(const char* coop, const char* small, uint64_t limit, bool profile,
               std::unique_ptr<Backend>* out) {
  setenv("TRIT_VK_COOPMAT", coop, 1);
  setenv("TRIT_VK_SMALL_TILES", small, 1);
  if (profile) setenv("TRIT_VK_PROFILE", "1", 1);
  open_vulkan(limit, out);
  unsetenv("TRIT_VK_COOPMAT");
  unsetenv("TRIT_VK_SMALL_TILES");
  unsetenv("TRIT_VK_PROFILE");
}

// Products over token counts that leave partial tiles (and one just past the matvec path), of
// both ternary types, with an out_scale, of rows that end inside a tile, and of block scales
// (which keep the plain path).
std::vector<Out> coop_products(Backend& b) {
  static const auto tq2 = ternary_weight(DType::TQ2_0, 768, 300, false, 501);
  static const auto scaled = ternary_weight(DType::TQ2_0, 768, 130, false, 502);
  static const auto i2s = ternary_weight(DType::I2_S, 768, 256, false, 503);
  static const auto blocks = ternary_weight(DType::TQ2_0, 768, 96, true, 504);
  scaled->w.out_scale = 1.25f;
  std::vector<Out> outs;
  for (int64_t n : {301, 9, 64}) {
    TensorPtr x = upload(b, "x", n, 768, randn(n * 768, 505 + uint64_t(n)));
    std::vector<TensorPtr> ys;
    std::vector<LinearOp> ops;
    for (const HostWeight* w : {tq2.get(), scaled.get(), i2s.get(), blocks.get()}) {
      ys.push_back(b.tensor(cat("y_", w->w.name), n, w->w.m.n_out));
      ops.push_back({&w->w, ys.back().get(), nullptr});
    }
    b.linear(ops, *x, n, true);
    for (const TensorPtr& y : ys) outs.push_back(download(b, *y, n, 0));
  }
  return outs;
}

TEST(VulkanCoopMatrix, TiledProductsGiveThePlainBits) {
  // Which extensions the device offers for this, independently of the backend's choice.
  const VulkanDeviceList list = enumerate_vulkan_devices();
  const VulkanDeviceInfo* info =
      list.devices.empty()
          ? nullptr
          : &list.devices[vk::choose_device(list.devices, vk::DeviceChoice::any())];
  int ran = 0;
  for (const char* ext : {"nv", "khr"}) {
    const bool khr = ext[0] == 'k';
    const std::string tag = cat("int8 cooperative matrices (", khr ? "KHR" : "NV", ")");
    const bool offered =
        info && vk::plan_coop_tiles(*info, khr ? vk::CoopChoice::Khr : vk::CoopChoice::Nv);
    // 32 KiB: weights in pieces of 170 rows (the second starts inside a tile), tokens in
    // segments of 10 (still the tiled path). Small tiles: 32 x 32 (plain: 32 x 16).
    for (const char* small : {"0", "1"}) {
      for (uint64_t limit : {uint64_t(0), 32 * KiB}) {
        const std::string what =
            cat(ext, " at ", limit_name(limit), small[0] == '1' ? ", small tiles" : "");
        std::unique_ptr<Backend> plain, coop;
        open_coop("0", small, limit, false, &plain);
        if (!plain) return;
        open_coop(ext, small, limit, false, &coop);
        ASSERT_EQ(coop->description().find(tag) != std::string::npos, offered)
            << coop->description();
        if (!offered) continue;
        EXPECT_EQ(plain->description().find("cooperative"), std::string::npos);
        const std::vector<Out> want = coop_products(*plain), got = coop_products(*coop);
        ASSERT_EQ(want.size(), got.size());
        for (size_t i = 0; i < want.size(); ++i) expect_match(want[i], got[i].v, 0, what);
        ++ran;
      }
    }
    ::testing::internal::CaptureStderr();
    {
      std::unique_ptr<Backend> vk;
      open_coop(ext, "0", 0, true, &vk);
      if (offered) coop_products(*vk);
    }
    const std::string table = ::testing::internal::GetCapturedStderr();
    if (!offered) continue;
    const std::string pipeline = khr ? "matmul_ternary_coop_khr:" : "matmul_ternary_coop:";
    EXPECT_NE(table.find(pipeline), std::string::npos) << ext << ":\n" << table;
  }
  if (ran == 0) GTEST_SKIP() << "no int8 cooperative matrices on this device";
}

}  // namespace
}  // namespace trit::engine
