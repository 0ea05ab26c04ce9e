// lora_init: a fresh adapter initialised as PEFT does (A kaiming-uniform, B zero).
#include "train/lora_init.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/lora.h"
#include "model/lora_set.h"
#include "support/adapters.h"
#include "support/errors.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::expect_same_adapter;
using test::small_hparams;

TEST(Lora, InitStatistics) {
  HParams hp = small_hparams();
  hp.n_embd = 256;
  hp.n_ff = 512;
  hp.n_head = 4;
  hp.rope_dim = 64;
  const LoraAdapter a = lora_init(hp, "all,head", 8, 32.0f, true, 1234);
  EXPECT_EQ(a.layers.size(), size_t(2 * 7 + 1));
  EXPECT_EQ(a.alpha, 32.0f);
  EXPECT_TRUE(a.rslora);
  EXPECT_EQ(a.base_arch, "bitnet");
  for (const auto& [name, l] : a.layers) {
    const auto [n_in, n_out] = lora_base_shape(hp, name, "test");
    EXPECT_EQ(l.n_in, n_in) << name;
    EXPECT_EQ(l.n_out, n_out) << name;
    EXPECT_EQ(l.rank, 8);
    ASSERT_EQ(l.a.size(), size_t(8 * n_in));
    ASSERT_EQ(l.b.size(), size_t(8 * n_out));
    for (float x : l.b) ASSERT_EQ(x, 0.0f) << name;
    // Uniform in [-1/sqrt(n_in), 1/sqrt(n_in)]: mean 0, variance bound^2 / 3.
    const double bound = 1.0 / std::sqrt(double(n_in));
    double sum = 0, sum2 = 0, lo = 0, hi = 0;
    for (float x : l.a) {
      ASSERT_LE(std::fabs(x), bound) << name;
      sum += x;
      sum2 += double(x) * x;
      lo = std::min(lo, double(x));
      hi = std::max(hi, double(x));
    }
    const double n = double(l.a.size());
    const double sd = bound / std::sqrt(3.0);
    EXPECT_LT(std::fabs(sum / n), 5 * sd / std::sqrt(n)) << name;
    EXPECT_NEAR(sum2 / n, bound * bound / 3, 0.1 * bound * bound / 3) << name;
    EXPECT_GT(hi, 0.95 * bound) << name;  // the range is used, not a narrower one
    EXPECT_LT(lo, -0.95 * bound) << name;
  }
  // Deterministic per seed; another seed gives other values.
  const LoraAdapter same = lora_init(hp, "all,head", 8, 32.0f, true, 1234);
  expect_same_adapter(a, same);
  const LoraAdapter other = lora_init(hp, "all,head", 8, 32.0f, true, 1235);
  EXPECT_NE(a.layers.at("blk.0.attn_q.weight").a, other.layers.at("blk.0.attn_q.weight").a);
  // Targets: only those asked for.
  const LoraAdapter qv = lora_init(hp, "q,v", 4, 8.0f, false, 1);
  EXPECT_EQ(qv.layers.size(), 4u);
  EXPECT_TRUE(qv.layers.count("blk.1.attn_v.weight"));
  EXPECT_FALSE(qv.layers.count("output.weight"));
  EXPECT_CONTAINS(error_of([&] { lora_init(hp, "q", 0, 8.0f, false, 1); }), "rank");
  EXPECT_CONTAINS(error_of([&] { lora_init(hp, "q,bogus", 4, 8.0f, false, 1); }), "bogus");
}

}  // namespace
}  // namespace trit::engine
