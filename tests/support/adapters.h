// LoRA adapters for the tests: random ones of a model's shape, comparison, and attaching host
// adapters to a backend as the CLI's --lora does (model/lora_set.h).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/lora.h"
#include "model/hparams.h"
#include "model/lora_set.h"

namespace trit::engine::test {

// A small model shape for adapter tests: q/o 32 -> 32, k/v 32 -> 16, gate/up 32 -> 48,
// down 48 -> 32, head 32 -> 50, two blocks.
inline HParams small_hparams() {
  HParams hp;
  hp.arch = "bitnet";
  hp.n_vocab = 50;
  hp.n_embd = 32;
  hp.n_ff = 48;
  hp.n_layer = 2;
  hp.n_head = 4;
  hp.n_head_kv = 2;
  hp.rope_dim = 8;
  return hp;
}

struct RandomAdapter {
  std::string targets = "all";  // as --targets: "all", "q,v", "attn_q,ffn_down", "all,head"
  int64_t rank = 4;
  float alpha = 16.0f;
  bool rslora = false;
  float dropout = 0.0f;
  float sd = 0.05f;  // A and B are normal(0, sd): B is not zero, unlike a fresh adapter's
  uint64_t seed = 1;
};

// An adapter on the targets of every block (and the head when "head" is among them), with the
// values of one mt19937_64 stream drawn layer by layer (blocks in order, the head last), A then
// B.
inline LoraAdapter random_adapter(const HParams& hp, const RandomAdapter& o) {
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> nd(0.0f, o.sd);
  LoraAdapter ad;
  ad.alpha = o.alpha;
  ad.rslora = o.rslora;
  ad.dropout = o.dropout;
  ad.base_arch = hp.arch;
  auto add = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    LoraLayer L;
    L.n_in = n_in;
    L.n_out = n_out;
    L.rank = o.rank;
    L.a.resize(size_t(o.rank * n_in));
    L.b.resize(size_t(n_out * o.rank));
    for (float& v : L.a) v = nd(rng);
    for (float& v : L.b) v = nd(rng);
    ad.layers[name] = std::move(L);
  };
  const std::vector<std::string> suffixes = lora_target_suffixes(o.targets);
  bool head = false;
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (const std::string& what : suffixes) {
      if (what == "output") {
        head = true;
        continue;
      }
      const auto [n_in, n_out] = block_linear_shape(hp, what);
      add(block_tensor_name(l, what), n_in, n_out);
    }
  }
  if (head) add("output.weight", hp.n_embd, hp.n_vocab);
  return ad;
}

// x and y hold the same settings and layers, with values equal (tol 0) or within tol relative
// (plus 1e-7 absolute).
inline void expect_same_adapter(const LoraAdapter& x, const LoraAdapter& y, float tol = 0.0f) {
  EXPECT_EQ(x.alpha, y.alpha);
  EXPECT_EQ(x.rslora, y.rslora);
  EXPECT_EQ(x.dropout, y.dropout);
  EXPECT_EQ(x.base_arch, y.base_arch);
  ASSERT_EQ(x.layers.size(), y.layers.size());
  for (const auto& [name, l] : x.layers) {
    auto it = y.layers.find(name);
    ASSERT_NE(it, y.layers.end()) << name;
    const LoraLayer& m = it->second;
    EXPECT_EQ(l.n_in, m.n_in) << name;
    EXPECT_EQ(l.n_out, m.n_out) << name;
    EXPECT_EQ(l.rank, m.rank) << name;
    ASSERT_EQ(l.a.size(), m.a.size()) << name;
    ASSERT_EQ(l.b.size(), m.b.size()) << name;
    for (size_t i = 0; i < l.a.size(); ++i) {
      if (tol == 0.0f) {
        ASSERT_EQ(l.a[i], m.a[i]) << name << " A[" << i << "]";
      } else {
        ASSERT_NEAR(l.a[i], m.a[i], tol * std::fabs(l.a[i]) + 1e-7f) << name << " A[" << i << "]";
      }
    }
    for (size_t i = 0; i < l.b.size(); ++i) {
      if (tol == 0.0f) {
        ASSERT_EQ(l.b[i], m.b[i]) << name << " B[" << i << "]";
      } else {
        ASSERT_NEAR(l.b[i], m.b[i], tol * std::fabs(l.b[i]) + 1e-7f) << name << " B[" << i << "]";
      }
    }
  }
}

// Host adapters uploaded to a backend (which must outlive this) and the branches a pass adds,
// each adapter with its user scale: what the CLI makes of --lora A:SCALE.
struct AttachedLora {
  std::vector<std::unique_ptr<DeviceAdapter>> adapters;
  LoraSet set;
};

inline AttachedLora attach_lora(Backend& be, const HParams& hp,
                                const std::vector<std::pair<const LoraAdapter*, float>>& adapters) {
  AttachedLora out;
  std::vector<std::pair<const DeviceAdapter*, float>> uses;
  for (const auto& [adapter, scale] : adapters) {
    out.adapters.push_back(std::make_unique<DeviceAdapter>(*adapter, hp, be, "adapter"));
    uses.emplace_back(out.adapters.back().get(), scale);
  }
  out.set = lora_set(hp, uses);
  return out;
}

}  // namespace trit::engine::test
