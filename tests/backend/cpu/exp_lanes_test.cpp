// exp_lanes.h against the C library's exp in double precision (within 2 ulp over the whole
// range softmaxes use and beyond), its edges (0 below the smallest normal, infinity above the
// largest float, NaN kept), and the same bits from the scalar function and every instruction-set
// level's loop, tail included.
#include "backend/cpu/exp_lanes.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/numeric.h"

namespace trit::engine {
namespace {

// Distance in units in the last place between two positive finite floats.
int64_t ulps(float a, float b) {
  return std::abs(int64_t(std::bit_cast<int32_t>(a)) - int64_t(std::bit_cast<int32_t>(b)));
}

TEST(ExpLanes, WithinTwoUlpOfTheExactValue) {
  int64_t worst = 0;
  float worst_x = 0;
  // Every 2^-12 from -87 to 88, where the result is a normal float.
  for (float x = -87.0f; x <= 88.0f; x += 1.0f / 4096) {
    const float want = float(std::exp(double(x)));
    const int64_t d = ulps(exp_f32(x), want);
    if (d > worst) worst = d, worst_x = x;
  }
  EXPECT_LE(worst, 2) << "at x = " << worst_x << ": " << exp_f32(worst_x) << " against "
                      << std::exp(double(worst_x));
  EXPECT_EQ(exp_f32(0.0f), 1.0f);
  EXPECT_EQ(exp_f32(-0.0f), 1.0f);
}

TEST(ExpLanes, EdgesAreZeroInfinityAndNan) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(exp_f32(-88.0f), 0.0f);
  EXPECT_EQ(exp_f32(-1e30f), 0.0f);
  EXPECT_EQ(exp_f32(-inf), 0.0f);
  EXPECT_EQ(exp_f32(89.0f), inf);
  EXPECT_EQ(exp_f32(inf), inf);
  EXPECT_TRUE(std::isnan(exp_f32(std::numeric_limits<float>::quiet_NaN())));
  // The smallest normal results are normal and close to exp's.
  const float lo = exp_f32(-87.33654f);
  EXPECT_GE(lo, std::numeric_limits<float>::min());
  EXPECT_NEAR(lo / std::exp(-87.33654), 1.0, 1e-6);
}

TEST(ExpLanes, EveryLevelGivesTheScalarBits) {
  const CpuLevel levels[] = {CpuLevel::Scalar, CpuLevel::Avx2, CpuLevel::Avx512Vnni};
  std::vector<float> x = test::randn(1003, 5, 30.0f);  // odd: a tail after the lanes
  x[3] = -std::numeric_limits<float>::infinity();
  x[17] = std::numeric_limits<float>::quiet_NaN();
  x[40] = -100.0f;
  x[41] = 120.0f;
  const float shift = 2.5f;
  for (CpuLevel level : levels) {
    if (detect_cpu_level() < level) continue;
    std::vector<float> got = x;
    exp_shifted(got.data(), int64_t(got.size()), shift, level);
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = exp_f32(x[i] - shift);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got[i])) << cpu_level_name(level) << " at " << i;
      } else {
        EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want))
            << cpu_level_name(level) << " at " << i << ": exp(" << x[i] << " - " << shift << ")";
      }
    }
  }
}

}  // namespace
}  // namespace trit::engine
