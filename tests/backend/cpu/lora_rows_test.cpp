// lora_rows.h against the scalar loop written here: each output's sum over the rank in order
// from zero, every product rounded on its own, then scaled and added. Equal bits at every
// instruction-set level.
#include "backend/cpu/lora_rows.h"

#include <gtest/gtest.h>

#include <bit>
#include <vector>

#include "support/numeric.h"

namespace trit::engine {
namespace {

TEST(LoraRows, UpProjectionEqualsTheScalarSums) {
  for (CpuLevel level : {CpuLevel::Scalar, CpuLevel::Avx2, CpuLevel::Avx512Vnni}) {
    if (detect_cpu_level() < level) continue;
    for (int64_t m : {1, 7, 16, 100, 128, 256, 300}) {
      for (int64_t r : {1, 8, 16, 48}) {
        const int64_t T = 5, ldb = m + 9, ldy = m + 4;
        const std::vector<float> bt = test::randn(r * ldb, 1);
        const std::vector<float> ax = test::randn(T * r, 2);
        const std::vector<float> y0 = test::randn(T * ldy, 3);
        const float s = 0.625f;
        std::vector<float> y = y0;
        lora_b_block(bt.data(), ldb, ax.data(), T, r, m, s, y.data(), ldy, level);
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t o = 0; o < ldy; ++o) {
            float want = y0[size_t(t * ldy + o)];
            if (o < m) {
              float acc = 0;
              for (int64_t k = 0; k < r; ++k) {
                const float p = bt[size_t(k * ldb + o)] * ax[size_t(t * r + k)];
                acc += p;
              }
              const float scaled = acc * s;
              want += scaled;
            }
            ASSERT_EQ(std::bit_cast<uint32_t>(y[size_t(t * ldy + o)]),
                      std::bit_cast<uint32_t>(want))
                << cpu_level_name(level) << " m " << m << " r " << r << " token " << t << " output "
                << o;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace trit::engine
