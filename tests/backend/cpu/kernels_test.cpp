// CPU kernels: the scalar versions against straightforward formulas, and every SIMD level the
// processor has against scalar (bit for bit for quantize_acts and ternary_matmul).
// Weights are packed here by small local helpers written from FORMATS.md.
#include "backend/cpu/kernels.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels_impl.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"

namespace trit::engine {
namespace {

bool have(CpuLevel level) {
  return detect_cpu_level() >= level;
}

std::string name(CpuLevel level) {
  return std::string(cpu_level_name(level));
}

// ---- local packers and decoders (FORMATS.md) ----

// TQ2_0: per block of 256, qs[64] then fp16 d; byte 32h + m holds weight 128h + 32l + m at
// bits 2l, code = trit + 1.
std::vector<uint8_t> local_pack_tq2_0(const std::vector<int8_t>& trits,
                                      const std::vector<float>& d) {
  const size_t blocks = trits.size() / 256;
  std::vector<uint8_t> out(blocks * 66, 0);
  for (size_t b = 0; b < blocks; ++b) {
    uint8_t* blk = out.data() + b * 66;
    for (int j = 0; j < 256; ++j) {
      const int h = j / 128, l = (j % 128) / 32, m = j % 32;
      blk[32 * h + m] |= uint8_t((trits[b * 256 + size_t(j)] + 1) << (2 * l));
    }
    const uint16_t hd = f32_to_fp16(d[b]);
    std::memcpy(blk + 64, &hd, 2);
  }
  return out;
}

// I2_S: runs of 128 in 32 bytes, weight j of a run at byte j % 32, bits 6 - 2(j / 32); codes
// 0, 1, 2 = -1, 0, +1; then a 32-byte tail starting with the fp32 scale.
std::vector<uint8_t> local_pack_i2_s(const std::vector<int8_t>& trits, float scale) {
  const size_t runs = trits.size() / 128;
  std::vector<uint8_t> out(runs * 32 + 32, 0);
  for (size_t k = 0; k < runs; ++k) {
    for (int j = 0; j < 128; ++j) {
      out[k * 32 + size_t(j % 32)] |=
          uint8_t((trits[k * 128 + size_t(j)] + 1) << (6 - 2 * (j / 32)));
    }
  }
  std::memcpy(out.data() + runs * 32, &scale, 4);
  return out;
}

float q8_value(const uint8_t* blk, int i) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return fp16_to_f32(h) * float(int8_t(blk[2 + i]));
}

float q6k_value(const uint8_t* blk, int e) {
  uint16_t hd;
  std::memcpy(&hd, blk + 208, 2);
  const int h = e / 128, r = e % 128;
  const uint8_t l = blk[64 * h + r % 64];
  const int lo = r < 64 ? (l & 15) : (l >> 4);
  const int hi = (blk[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
  return fp16_to_f32(hd) * float(int8_t(blk[192 + e / 16])) * float((lo | (hi << 4)) - 32);
}

// Row r of a float matrix decoded by the formulas above.
std::vector<float> ref_row(DType type, const std::vector<uint8_t>& data, int64_t n_in, int64_t r) {
  std::vector<float> out(static_cast<size_t>(n_in));
  for (int64_t k = 0; k < n_in; ++k) {
    uint16_t h;
    switch (type) {
      case DType::F32:
        std::memcpy(&out[size_t(k)], data.data() + (r * n_in + k) * 4, 4);
        break;
      case DType::F16:
        std::memcpy(&h, data.data() + (r * n_in + k) * 2, 2);
        out[size_t(k)] = fp16_to_f32(h);
        break;
      case DType::BF16:
        std::memcpy(&h, data.data() + (r * n_in + k) * 2, 2);
        out[size_t(k)] = bf16_to_f32(h);
        break;
      case DType::Q8_0:
        out[size_t(k)] = q8_value(data.data() + (r * n_in / 32 + k / 32) * 34, int(k % 32));
        break;
      case DType::Q6_K:
        out[size_t(k)] = q6k_value(data.data() + (r * n_in / 256 + k / 256) * 210, int(k % 256));
        break;
      default:
        ADD_FAILURE();
    }
  }
  return out;
}

std::vector<uint8_t> random_float_matrix(DType type, int64_t n_in, int64_t n_out,
                                         std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  const int64_t n = n_in * n_out;
  std::vector<uint8_t> out;
  switch (type) {
    case DType::F32:
      out.resize(size_t(n) * 4);
      for (int64_t i = 0; i < n; ++i) {
        const float v = normal(rng);
        std::memcpy(out.data() + i * 4, &v, 4);
      }
      break;
    case DType::F16:
    case DType::BF16:
      out.resize(size_t(n) * 2);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == DType::F16 ? f32_to_fp16(normal(rng)) : f32_to_bf16(normal(rng));
        std::memcpy(out.data() + i * 2, &h, 2);
      }
      break;
    case DType::Q8_0:
      out.resize(size_t(n / 32 * 34));
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint16_t d = f32_to_fp16(0.01f + std::fabs(normal(rng)) * 0.02f);
        std::memcpy(out.data() + b * 34, &d, 2);
        for (int i = 0; i < 32; ++i) out[size_t(b * 34 + 2 + i)] = uint8_t(byte(rng));
      }
      break;
    case DType::Q6_K:
      out.resize(size_t(n / 256 * 210));
      for (int64_t b = 0; b < n / 256; ++b) {
        for (int i = 0; i < 208; ++i) out[size_t(b * 210 + i)] = uint8_t(byte(rng));
        const uint16_t d = f32_to_fp16(0.001f + std::fabs(normal(rng)) * 0.002f);
        std::memcpy(out.data() + b * 210 + 208, &d, 2);
      }
      break;
    default:
      ADD_FAILURE();
  }
  return out;
}

std::vector<float> random_acts(int64_t count, std::mt19937& rng, float spread = 1.0f) {
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> x(static_cast<size_t>(count));
  for (auto& v : x) v = normal(rng);
  return x;
}

// Activations mostly near +max: large dot products with rows that lean to +1.
std::vector<float> biased_acts(int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.6f, 1.0f);
  std::uniform_int_distribution<int> pct(0, 99);
  std::vector<float> x(static_cast<size_t>(count));
  for (auto& v : x) v = pct(rng) < 95 ? u(rng) : -u(rng);
  return x;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// Equal bytes, or NaN in both.
bool same_bytes_or_nan(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], 4) != 0) return false;
  }
  return true;
}

// ---- levels ----

// Every level (scalar included) or every SIMD level; a level the processor lacks is skipped.
class CpuKernelsAnyLevel : public ::testing::TestWithParam<CpuLevel> {
 protected:
  void SetUp() override {
    if (!have(GetParam())) GTEST_SKIP() << name(GetParam()) << " is not supported here";
  }
};
class CpuKernelsSimdLevel : public CpuKernelsAnyLevel {};

std::string level_param_name(const ::testing::TestParamInfo<CpuLevel>& info) {
  return name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Levels, CpuKernelsAnyLevel,
                         ::testing::Values(CpuLevel::Scalar, CpuLevel::Avx2, CpuLevel::Avx512Vnni),
                         level_param_name);
INSTANTIATE_TEST_SUITE_P(Levels, CpuKernelsSimdLevel,
                         ::testing::Values(CpuLevel::Avx2, CpuLevel::Avx512Vnni), level_param_name);

// ---- CPU levels ----

TEST(CpuLevels, NamesAndOverride) {
  EXPECT_EQ(cpu_level_name(CpuLevel::Scalar), "scalar");
  EXPECT_EQ(cpu_level_name(CpuLevel::Avx2), "avx2");
  EXPECT_EQ(cpu_level_name(CpuLevel::Avx512Vnni), "avx512");
  const CpuLevel top = CpuLevel::Avx512Vnni;
  EXPECT_EQ(apply_cpu_level_override(top, nullptr), top);
  EXPECT_EQ(apply_cpu_level_override(top, ""), top);
  EXPECT_EQ(apply_cpu_level_override(top, "scalar"), CpuLevel::Scalar);
  EXPECT_EQ(apply_cpu_level_override(top, "avx2"), CpuLevel::Avx2);
  EXPECT_EQ(apply_cpu_level_override(top, "avx512"), CpuLevel::Avx512Vnni);
  // Never raised above what the processor has.
  EXPECT_EQ(apply_cpu_level_override(CpuLevel::Avx2, "avx512"), CpuLevel::Avx2);
  EXPECT_EQ(apply_cpu_level_override(CpuLevel::Scalar, "avx2"), CpuLevel::Scalar);
  EXPECT_THROW(apply_cpu_level_override(top, "sse9"), Error);
  EXPECT_LE(active_cpu_level(), detect_cpu_level());
  std::printf("[          ] detected CPU level: %s, active: %s\n",
              std::string(cpu_level_name(detect_cpu_level())).c_str(),
              std::string(cpu_level_name(active_cpu_level())).c_str());
}

// ---- quantize_acts ----

void expect_same_acts(const QuantizedActs& a, const QuantizedActs& b, const std::string& what) {
  ASSERT_EQ(a.n_tokens, b.n_tokens) << what;
  ASSERT_EQ(a.n, b.n) << what;
  ASSERT_EQ(a.q.size(), b.q.size()) << what;
  ASSERT_EQ(a.scale.size(), b.scale.size()) << what;
  ASSERT_EQ(a.sums.size(), b.sums.size()) << what;
  EXPECT_EQ(std::memcmp(a.q.data(), b.q.data(), a.q.size()), 0) << what << ": q differs";
  EXPECT_EQ(std::memcmp(a.scale.data(), b.scale.data(), a.scale.size() * 4), 0)
      << what << ": scale differs";
  EXPECT_EQ(std::memcmp(a.sums.data(), b.sums.data(), a.sums.size() * 4), 0)
      << what << ": sums differ";
}

TEST(CpuQuantizeActs, MatchesFormula) {
  std::mt19937 rng(1);
  for (int64_t n : {128, 256, 384, 2560, 100, 33}) {
    const int64_t nt = 3;
    std::vector<float> x = random_acts(nt * n, rng, 3.0f);
    QuantizedActs qa;
    quantize_acts(x.data(), nt, n, qa, CpuLevel::Scalar);
    ASSERT_EQ(qa.sums.size(), size_t(nt * ((n + 127) / 128)));
    for (int64_t t = 0; t < nt; ++t) {
      float m = 0;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[size_t(t * n + i)]));
      const float s = 127.0f / std::max(m, 1e-5f);
      EXPECT_EQ(qa.scale[size_t(t)], s);
      for (int64_t i = 0; i < n; ++i) {
        const float v = std::nearbyint(x[size_t(t * n + i)] * s);
        const int expect = int(std::min(127.0f, std::max(-128.0f, v)));
        ASSERT_EQ(qa.q[size_t(t * n + i)], expect) << "t " << t << " i " << i;
      }
      for (int64_t run = 0; run * 128 < n; ++run) {
        int32_t sum = 0;
        for (int64_t i = run * 128; i < std::min(n, run * 128 + 128); ++i) {
          sum += qa.q[size_t(t * n + i)];
        }
        EXPECT_EQ(qa.sums[size_t(t * ((n + 127) / 128) + run)], sum);
      }
    }
  }
}

TEST_P(CpuKernelsAnyLevel, QuantizeTiesRoundHalfEvenAndZeroRow) {
  const CpuLevel level = GetParam();
  // max |x| = 127 gives scale exactly 1, so x * scale = x: the .5 cases are exact ties.
  std::vector<float> row(128, 0.0f);
  const float vals[] = {127.0f, 0.5f,   -0.5f,   1.5f,    -1.5f,       2.5f, -2.5f,
                        3.5f,   126.5f, -126.5f, -127.0f, 0.49999997f, 1.0f, -3.5f};
  const int8_t want[] = {127, 0, 0, 2, -2, 2, -2, 4, 126, -126, -127, 0, 1, -4};
  for (size_t i = 0; i < std::size(vals); ++i) row[i] = vals[i];
  // A second row of zeros: scale uses the 1e-5 floor.
  row.resize(256, 0.0f);
  QuantizedActs qa;
  quantize_acts(row.data(), 2, 128, qa, level);
  EXPECT_EQ(qa.scale[0], 1.0f) << name(level);
  for (size_t i = 0; i < std::size(vals); ++i) {
    EXPECT_EQ(qa.q[i], want[i]) << name(level) << " value " << vals[i];
  }
  EXPECT_EQ(qa.scale[1], 127.0f / 1e-5f) << name(level);
  for (int i = 0; i < 128; ++i) EXPECT_EQ(qa.q[size_t(128 + i)], 0);
  EXPECT_EQ(qa.sums[1], 0);
  int32_t s0 = 0;
  for (int i = 0; i < 128; ++i) s0 += qa.q[size_t(i)];
  EXPECT_EQ(qa.sums[0], s0);
}

TEST_P(CpuKernelsSimdLevel, QuantizeActsEqualsScalar) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(2);
  for (int64_t n : {1, 7, 16, 31, 33, 100, 128, 130, 256, 1000, 2560, 4096, 6912}) {
    for (int64_t nt : {1, 2, 5}) {
      std::vector<float> x = random_acts(nt * n, rng, 0.1f + float(n % 7));
      // Values that land exactly on .5 after scaling, and special values.
      if (n >= 16) {
        x[0] = 127.0f;
        x[1] = 0.5f;
        x[2] = -2.5f;
        x[3] = 64.5f;
        for (int64_t i = 4; i < 16; ++i) x[size_t(i)] = float(i) + 0.5f;
      }
      QuantizedActs a, b;
      quantize_acts(x.data(), nt, n, a, CpuLevel::Scalar);
      quantize_acts(x.data(), nt, n, b, level);
      expect_same_acts(a, b, name(level) + " n " + std::to_string(n));
    }
  }
  // NaN, infinities and zeros behave the same at every level.
  std::vector<float> x = random_acts(3 * 256, rng);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  x[300] = std::numeric_limits<float>::infinity();
  x[301] = -std::numeric_limits<float>::infinity();
  for (int i = 512; i < 768; ++i) x[size_t(i)] = 0.0f;
  QuantizedActs a, b;
  quantize_acts(x.data(), 3, 256, a, CpuLevel::Scalar);
  quantize_acts(x.data(), 3, 256, b, level);
  expect_same_acts(a, b, name(level) + " special values");
}

// ---- ternary ----

struct TernaryCase {
  DType type;
  int64_t n_in, n_out;
  std::vector<int8_t> trits;   // (n_out, n_in)
  std::vector<float> block_d;  // per 256 block (TQ2_0), as stored in fp16
  float scale = 0;             // I2_S
  std::vector<uint8_t> data;
  TernaryMatrix matrix() const {
    TernaryMatrix m;
    m.type = type;
    m.data = data.data();
    m.n_in = n_in;
    m.n_out = n_out;
    m.uniform_scale = ternary_uniform_scale(type, data.data(), n_in, n_out);
    return m;
  }
};

// mode 0: one scale for all blocks; 1: a different d per block, some all-zero blocks with d 0.
TernaryCase make_ternary(DType type, int64_t n_in, int64_t n_out, int mode, std::mt19937& rng) {
  TernaryCase c;
  c.type = type;
  c.n_in = n_in;
  c.n_out = n_out;
  c.trits.resize(size_t(n_in * n_out));
  std::uniform_int_distribution<int> trit(-1, 1);
  for (auto& t : c.trits) t = int8_t(trit(rng));
  // Rows 0 and 2 lean to +1: with positive-leaning activations (biased_acts) their block dot
  // products reach 14 bits, so d * dot needs more than 24 bits and an FMA in place of the
  // separate multiply and add would change the result.
  std::uniform_int_distribution<int> pct(0, 99);
  for (int64_t r = 0; r < n_out; r += 2) {
    if (r == 4) break;
    for (int64_t j = 0; j < n_in; ++j) {
      c.trits[size_t(r * n_in + j)] = pct(rng) < 90 ? 1 : int8_t(trit(rng));
    }
  }
  if (type == DType::I2_S) {
    c.scale = 0.0123f;
    c.data = local_pack_i2_s(c.trits, c.scale);
    return c;
  }
  const size_t blocks = size_t(n_in * n_out / 256);
  c.block_d.assign(blocks, fp16_to_f32(f32_to_fp16(0.0372f)));
  if (mode == 1) {
    std::uniform_real_distribution<float> u(0.001f, 0.1f);
    for (size_t b = 0; b < blocks; ++b) {
      if (b % 5 == 3) {  // an all-zero block with d = 0
        c.block_d[b] = 0.0f;
        for (int j = 0; j < 256; ++j) c.trits[b * 256 + size_t(j)] = 0;
      } else {
        c.block_d[b] = fp16_to_f32(f32_to_fp16(u(rng)));
      }
    }
  } else if (blocks > 2) {  // all-zero blocks with d = 0 do not break the uniform scale
    c.block_d[1] = 0.0f;
    for (int j = 0; j < 256; ++j) c.trits[256 + size_t(j)] = 0;
  }
  if (type == DType::TQ1_0) {
    c.data.resize(size_t(blocks * 54));
    pack_tq1_0(c.trits.data(), c.block_d.data(), n_in * n_out, c.data.data());
  } else {
    c.data = local_pack_tq2_0(c.trits, c.block_d);
  }
  return c;
}

// The same trits and block scales as another type's case.
TernaryCase retyped(const TernaryCase& c, DType type) {
  TernaryCase o = c;
  o.type = type;
  if (type == DType::TQ1_0) {
    o.data.resize(c.block_d.size() * 54);
    pack_tq1_0(c.trits.data(), c.block_d.data(), c.n_in * c.n_out, o.data.data());
  } else {
    o.data = local_pack_tq2_0(c.trits, c.block_d);
  }
  return o;
}

TEST(CpuTernaryMatmul, UniformScale) {
  std::mt19937 rng(3);
  TernaryCase u = make_ternary(DType::TQ2_0, 512, 6, 0, rng);
  EXPECT_EQ(ternary_uniform_scale(DType::TQ2_0, u.data.data(), 512, 6), u.block_d[0]);
  TernaryCase p = make_ternary(DType::TQ2_0, 512, 6, 1, rng);
  EXPECT_EQ(ternary_uniform_scale(DType::TQ2_0, p.data.data(), 512, 6), 0.0f);
  // One block that disagrees.
  std::vector<float> d(12, 0.5f);
  d[7] = 0.25f;
  std::vector<int8_t> trits(512 * 6, 1);
  EXPECT_EQ(ternary_uniform_scale(DType::TQ2_0, local_pack_tq2_0(trits, d).data(), 512, 6), 0.0f);
  d[7] = 0.5f;
  EXPECT_EQ(ternary_uniform_scale(DType::TQ2_0, local_pack_tq2_0(trits, d).data(), 512, 6), 0.5f);
  // All trits -1 (codes all zero) is not a zero block.
  std::fill(trits.begin(), trits.end(), int8_t(-1));
  d[2] = 0.125f;
  EXPECT_EQ(ternary_uniform_scale(DType::TQ2_0, local_pack_tq2_0(trits, d).data(), 512, 6), 0.0f);
  // TQ1_0: the same rules (zero blocks skipped, one disagreeing block gives 0).
  TernaryCase u1 = make_ternary(DType::TQ1_0, 512, 6, 0, rng);
  EXPECT_EQ(ternary_uniform_scale(DType::TQ1_0, u1.data.data(), 512, 6), u1.block_d[0]);
  TernaryCase p1 = make_ternary(DType::TQ1_0, 512, 6, 1, rng);
  EXPECT_EQ(ternary_uniform_scale(DType::TQ1_0, p1.data.data(), 512, 6), 0.0f);
  std::vector<uint8_t> tq1(12 * 54);
  d[2] = 0.5f;
  d[7] = 0.25f;
  pack_tq1_0(trits.data(), d.data(), 512 * 6, tq1.data());
  EXPECT_EQ(ternary_uniform_scale(DType::TQ1_0, tq1.data(), 512, 6), 0.0f);
  std::fill(trits.begin() + 7 * 256, trits.begin() + 8 * 256, int8_t(0));  // block 7 now zero
  pack_tq1_0(trits.data(), d.data(), 512 * 6, tq1.data());
  EXPECT_EQ(ternary_uniform_scale(DType::TQ1_0, tq1.data(), 512, 6), 0.5f);
  TernaryCase i2 = make_ternary(DType::I2_S, 384, 5, 0, rng);
  EXPECT_EQ(ternary_uniform_scale(DType::I2_S, i2.data.data(), 384, 5), 0.0123f);
}

// Runs ternary_matmul over all rows, split into two calls at `split` (to test r0/r1), with an
// output stride wider than n_out.
std::vector<float> run_ternary(const TernaryCase& c, const QuantizedActs& qa, CpuLevel level,
                               int64_t split) {
  const int64_t stride = c.n_out + 3;
  std::vector<float> y(size_t(qa.n_tokens * stride), -7.0f);
  const TernaryMatrix m = c.matrix();
  ternary_matmul(m, qa, y.data(), stride, 0, split, level);
  ternary_matmul(m, qa, y.data(), stride, split, c.n_out, level);
  return y;
}

TEST(CpuTernaryMatmul, ScalarMatchesReference) {
  std::mt19937 rng(4);
  for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    for (int mode : {0, 1}) {
      if (type == DType::I2_S && mode == 1) continue;
      for (int64_t n_in : {256, 512, 2560}) {
        const int64_t n_out = 9, nt = 3;
        TernaryCase c = make_ternary(type, n_in, n_out, mode, rng);
        std::vector<float> x = random_acts(nt * n_in, rng);
        QuantizedActs qa;
        quantize_acts(x.data(), nt, n_in, qa, CpuLevel::Scalar);
        const TernaryMatrix m = c.matrix();
        EXPECT_EQ(m.uniform_scale != 0.0f, mode == 0);
        std::vector<float> y = run_ternary(c, qa, CpuLevel::Scalar, 4);
        for (int64_t t = 0; t < nt; ++t) {
          for (int64_t r = 0; r < n_out; ++r) {
            const float got = y[size_t(t * (n_out + 3) + r)];
            int32_t total = 0;
            double ref = 0, mag = 0;
            for (int64_t b = 0; b < n_in / 256; ++b) {
              int32_t dot = 0;
              for (int64_t j = b * 256; j < b * 256 + 256; ++j) {
                dot += c.trits[size_t(r * n_in + j)] * qa.q[size_t(t * n_in + j)];
              }
              total += dot;
              const double d =
                  type == DType::I2_S ? c.scale : c.block_d[size_t(r * n_in / 256 + b)];
              ref += d * dot;
              mag += std::fabs(d * dot);
            }
            ref /= qa.scale[size_t(t)];
            mag /= qa.scale[size_t(t)];
            EXPECT_NEAR(got, ref, 1e-6 * mag + 1e-30) << "r " << r << " t " << t;
            if (mode == 0) {  // exactly the integer dot product times d / scale
              const float d = type == DType::I2_S ? c.scale : m.uniform_scale;
              EXPECT_EQ(got, d * float(total) / qa.scale[size_t(t)]);
            }
          }
          EXPECT_EQ(y[size_t(t * (n_out + 3) + n_out)], -7.0f) << "wrote past n_out";
        }
      }
    }
  }
}

TEST_P(CpuKernelsSimdLevel, TernaryEqualsScalar) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(5);
  for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    for (int mode : {0, 1}) {
      if (type == DType::I2_S && mode == 1) continue;
      std::vector<int64_t> sizes = {256, 512, 768, 1280, 2560, 4096};
      if (type == DType::I2_S) sizes.insert(sizes.end(), {128, 384, 640});
      for (int64_t n_in : sizes) {
        // 131 rows of 4096: the many-token products' blocks of rows (block_rows: 60 of TQ2_0
        // and of TQ1_0 converted to it, 64 of I2_S), each thread's range ending in a short
        // block and a short tile.
        for (int64_t n_out : {1, 3, 4, 5, 7, 13, 33, 131}) {
          if (n_out == 131 && n_in != 4096) continue;
          TernaryCase c = make_ternary(type, n_in, n_out, mode, rng);
          for (int64_t nt : {1, 2, 3, 5, 8, 17}) {
            if (n_in >= 2560 && nt > 8 && n_out > 13 && n_out != 131) continue;  // quick
            if (n_out == 131 && nt < 5) continue;
            std::vector<float> x =
                nt % 2 ? biased_acts(nt * n_in, rng) : random_acts(nt * n_in, rng, 2.0f);
            QuantizedActs qs, qv;
            quantize_acts(x.data(), nt, n_in, qs, CpuLevel::Scalar);
            quantize_acts(x.data(), nt, n_in, qv, level);
            expect_same_acts(qs, qv, "acts");
            const int64_t split = n_out / 2 + 1 > n_out ? n_out : n_out / 2 + 1;
            const std::vector<float> a = run_ternary(c, qs, CpuLevel::Scalar, split);
            const std::vector<float> b = run_ternary(c, qs, level, split);
            ASSERT_TRUE(same_bytes(a, b))
                << name(level) << " " << dtype_name(type) << " mode " << mode << " n_in " << n_in
                << " n_out " << n_out << " tokens " << nt;
          }
        }
      }
    }
  }
}

TEST_P(CpuKernelsSimdLevel, TernaryArbitraryBytesEqualsScalar) {
  const CpuLevel level = GetParam();
  // Random bytes: codes 3 (invalid in files) decode as trit 2 at every level, and random fp16
  // block scales (subnormals, infinities, NaNs) go through the same float epilogue.
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> byte(0, 255);
  for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    for (int64_t n_in : {256, 1280}) {
      const int64_t n_out = 6, nt = 5;
      TernaryCase c;
      c.type = type;
      c.n_in = n_in;
      c.n_out = n_out;
      c.data.resize(*tensor_bytes(type, n_in, n_in * n_out));
      for (auto& b : c.data) b = uint8_t(byte(rng));
      if (type == DType::I2_S) {
        const float scale = 0.5f;
        std::memcpy(c.data.data() + n_in * n_out / 4, &scale, 4);
      }
      std::vector<float> x = random_acts(nt * n_in, rng);
      QuantizedActs qa;
      quantize_acts(x.data(), nt, n_in, qa, CpuLevel::Scalar);
      const std::vector<float> a = run_ternary(c, qa, CpuLevel::Scalar, 2);
      const std::vector<float> b = run_ternary(c, qa, level, 2);
      EXPECT_TRUE(same_bytes(a, b)) << name(level) << " " << dtype_name(type) << " " << n_in;
    }
  }
}

// The AVX-512 kernels find TQ1_0's digits by table lookups (VBMI) or by multiplies: both give
// the scalar kernel's bits, for any byte (random bytes: every value, with random block scales)
// at every token count of the in-place path and beyond it (five: the rows made TQ2_0 first).
TEST(CpuTernaryMatmul, Tq1TablesAndMultipliesEqualScalar) {
  if (detect_cpu_level() < CpuLevel::Avx512Vnni) GTEST_SKIP() << "no AVX-512 VNNI here";
  struct Restore {
    bool was = cpu::tq1_tables_enabled();
    ~Restore() { cpu::set_tq1_tables(was); }
  } restore;
  std::mt19937 rng(12);
  std::uniform_int_distribution<int> byte(0, 255);
  for (bool tables : {false, true}) {
    cpu::set_tq1_tables(tables);
    if (tables && !cpu::tq1_tables_enabled()) GTEST_SKIP() << "no AVX-512 VBMI here";
    for (int64_t n_in : {256, 768, 2560}) {
      for (int64_t n_out : {1, 5, 8, 13}) {
        TernaryCase c;
        c.type = DType::TQ1_0;
        c.n_in = n_in;
        c.n_out = n_out;
        c.data.resize(*tensor_bytes(DType::TQ1_0, n_in, n_in * n_out));
        for (auto& b : c.data) b = uint8_t(byte(rng));
        for (int64_t nt : {1, 2, 3, 4, 5}) {
          std::vector<float> x = random_acts(nt * n_in, rng);
          QuantizedActs qa;
          quantize_acts(x.data(), nt, n_in, qa, CpuLevel::Scalar);
          const std::vector<float> a = run_ternary(c, qa, CpuLevel::Scalar, n_out / 2);
          const std::vector<float> b = run_ternary(c, qa, CpuLevel::Avx512Vnni, n_out / 2);
          // NaN (from NaN or infinite block scales) may carry either sign: which NaN operand an
          // add returns follows the order the compiler gave it.
          ASSERT_TRUE(same_bytes_or_nan(a, b)) << (tables ? "tables" : "multiplies") << " n_in "
                                               << n_in << " n_out " << n_out << " tokens " << nt;
        }
      }
    }
  }
}

// The AVX2 level with AVX-VNNI's vpdpbusd and with vpmaddubsw (processors without it): both
// equal the scalar kernel bit for bit, at the token counts of every tile shape.
TEST(CpuTernaryMatmul, AvxVnniAndMaddubsEqualScalar) {
  if (detect_cpu_level() < CpuLevel::Avx2) GTEST_SKIP() << "no AVX2 here";
  struct Restore {
    bool was = cpu::avx_vnni_enabled();
    ~Restore() { cpu::set_avx_vnni(was); }
  } restore;
  std::mt19937 rng(13);
  for (bool vnni : {false, true}) {
    cpu::set_avx_vnni(vnni);
    if (vnni && !cpu::avx_vnni_enabled()) GTEST_SKIP() << "no AVX-VNNI here";
    for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
      for (int mode : {0, 1}) {
        if (type == DType::I2_S && mode == 1) continue;
        for (int64_t n_in : {256, 2560}) {
          for (int64_t n_out : {1, 4, 5, 13}) {
            const TernaryCase c = make_ternary(type, n_in, n_out, mode, rng);
            for (int64_t nt : {1, 2, 3, 4, 5, 8, 17}) {
              std::vector<float> x = biased_acts(nt * n_in, rng);
              QuantizedActs qa;
              quantize_acts(x.data(), nt, n_in, qa, CpuLevel::Scalar);
              const std::vector<float> a = run_ternary(c, qa, CpuLevel::Scalar, n_out / 2);
              const std::vector<float> b = run_ternary(c, qa, CpuLevel::Avx2, n_out / 2);
              ASSERT_TRUE(same_bytes(a, b))
                  << (vnni ? "vpdpbusd " : "vpmaddubsw ") << dtype_name(type) << " mode " << mode
                  << " n_in " << n_in << " n_out " << n_out << " tokens " << nt;
            }
          }
        }
      }
    }
  }
}

// TQ1_0 is read in place: its products equal those of the same trits and block scales as
// TQ2_0 (what the kernels computed from TQ1_0 files repacked at load), bit for bit.
TEST_P(CpuKernelsAnyLevel, Tq1EqualsTq2) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(9);
  for (int mode : {0, 1}) {
    for (int64_t n_in : {256, 768, 2560}) {
      for (int64_t n_out : {1, 4, 7}) {
        const TernaryCase c2 = make_ternary(DType::TQ2_0, n_in, n_out, mode, rng);
        const TernaryCase c1 = retyped(c2, DType::TQ1_0);
        for (int64_t nt : {1, 3, 4, 9}) {
          std::vector<float> x = biased_acts(nt * n_in, rng);
          QuantizedActs qa;
          quantize_acts(x.data(), nt, n_in, qa, level);
          const std::vector<float> a = run_ternary(c2, qa, level, n_out / 2);
          const std::vector<float> b = run_ternary(c1, qa, level, n_out / 2);
          ASSERT_TRUE(same_bytes(a, b)) << name(level) << " mode " << mode << " n_in " << n_in
                                        << " n_out " << n_out << " tokens " << nt;
        }
      }
    }
  }
}

TEST(CpuTernaryMatmul, RejectsBadInput) {
  std::mt19937 rng(6);
  TernaryCase c = make_ternary(DType::TQ2_0, 256, 2, 0, rng);
  std::vector<float> x = random_acts(512, rng);
  QuantizedActs qa;
  quantize_acts(x.data(), 1, 512, qa);
  std::vector<float> y(4);
  TernaryMatrix m = c.matrix();
  EXPECT_THROW(ternary_matmul(m, qa, y.data(), 2, 0, 2), Error);  // n mismatch
  quantize_acts(x.data(), 1, 256, qa);
  EXPECT_THROW(ternary_matmul(m, qa, y.data(), 2, 0, 3), Error);  // rows out of range
  m.type = DType::Q8_0;
  EXPECT_THROW(ternary_matmul(m, qa, y.data(), 2, 0, 2), Error);
}

// ---- float weights ----

struct FloatShape {
  DType type;
  int64_t n_in;
};
const FloatShape kFloatShapes[] = {
    {DType::F32, 33},   {DType::F32, 256},   {DType::F32, 1000},  {DType::F16, 7},
    {DType::F16, 100},  {DType::F16, 2560},  {DType::BF16, 17},   {DType::BF16, 512},
    {DType::Q8_0, 32},  {DType::Q8_0, 96},   {DType::Q8_0, 2560}, {DType::Q6_K, 256},
    {DType::Q6_K, 768}, {DType::Q6_K, 2560},
};

TEST(CpuFloatMatmul, MatrixRowEqualsFormula) {
  std::mt19937 rng(9);
  for (const FloatShape& s : kFloatShapes) {
    const int64_t n_out = 3;
    const std::vector<uint8_t> data = random_float_matrix(s.type, s.n_in, n_out, rng);
    const FloatMatrix m{s.type, data.data(), s.n_in, n_out};
    for (int64_t r = 0; r < n_out; ++r) {
      std::vector<float> got(static_cast<size_t>(s.n_in));
      float_matrix_row(m, r, got.data());
      EXPECT_TRUE(same_bytes(got, ref_row(s.type, data, s.n_in, r)))
          << dtype_name(s.type) << " row " << r;
    }
  }
}

// Several rows at once (the head's backward pass decodes panels so): at every level the bytes
// of the formula, rows placed one after another.
TEST_P(CpuKernelsAnyLevel, MatrixRowsEqualTheFormula) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(13);
  for (const FloatShape& s : kFloatShapes) {
    const int64_t n_out = 5;
    const std::vector<uint8_t> data = random_float_matrix(s.type, s.n_in, n_out, rng);
    const FloatMatrix m{s.type, data.data(), s.n_in, n_out};
    std::vector<float> got(static_cast<size_t>(3 * s.n_in + 1), -7.0f);
    float_matrix_rows(m, 1, 4, got.data(), level);
    for (int64_t r = 1; r < 4; ++r) {
      const std::vector<float> row(got.begin() + (r - 1) * s.n_in, got.begin() + r * s.n_in);
      EXPECT_TRUE(same_bytes(row, ref_row(s.type, data, s.n_in, r)))
          << name(level) << " " << dtype_name(s.type) << " n_in " << s.n_in << " row " << r;
    }
    EXPECT_EQ(got.back(), -7.0f) << "wrote past the rows";
  }
  const FloatMatrix m{DType::F32, nullptr, 32, 2};
  std::vector<float> y(64);
  EXPECT_THROW(float_matrix_rows(m, 1, 3, y.data(), level), Error);
}

// Columns of several rows (each thread's part of the head's backward product): the bytes of
// the formula's columns, for every whole-block range; ranges off the blocks are refused.
TEST_P(CpuKernelsAnyLevel, MatrixColumnsEqualTheFormula) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(17);
  for (const FloatShape& s : kFloatShapes) {
    const int64_t n_out = 4, block = dtype_traits(s.type).block_elems;
    const std::vector<uint8_t> data = random_float_matrix(s.type, s.n_in, n_out, rng);
    const FloatMatrix m{s.type, data.data(), s.n_in, n_out};
    const std::vector<int64_t> cuts = {0, block, s.n_in / block / 2 * block, s.n_in - block,
                                       s.n_in};
    for (int64_t c0 : cuts) {
      for (int64_t c1 : cuts) {
        if (c0 >= c1) continue;
        const int64_t width = c1 - c0;
        std::vector<float> got(static_cast<size_t>(3 * width + 1), -7.0f);
        float_matrix_cols(m, 1, 4, c0, c1, got.data(), level);
        for (int64_t r = 1; r < 4; ++r) {
          const std::vector<float> full = ref_row(s.type, data, s.n_in, r);
          const std::vector<float> want(full.begin() + c0, full.begin() + c1);
          const std::vector<float> row(got.begin() + (r - 1) * width, got.begin() + r * width);
          EXPECT_TRUE(same_bytes(row, want)) << name(level) << " " << dtype_name(s.type)
                                             << " columns " << c0 << ".." << c1 << " row " << r;
        }
        EXPECT_EQ(got.back(), -7.0f) << "wrote past the columns";
      }
    }
    std::vector<float> y(static_cast<size_t>(s.n_in));
    EXPECT_THROW(float_matrix_cols(m, 0, 1, 0, s.n_in + block, y.data(), level), Error);
    EXPECT_THROW(float_matrix_cols(m, 0, 1, block, block, y.data(), level), Error);
    if (block > 1) {
      EXPECT_THROW(float_matrix_cols(m, 0, 1, 1, s.n_in, y.data(), level), Error);
    }
  }
}

// Many tokens at once give each token the bits it gets alone: the batch path (decoded rows in
// blocks of inputs and tokens) adds the same products in the same order as decoding's tiles.
TEST_P(CpuKernelsAnyLevel, FloatMatmulBatchEqualsOneTokenAtATime) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(11);
  for (const FloatShape& s : kFloatShapes) {
    const int64_t n_out = 17;  // panels of six rows (AVX-512) and a short one
    const std::vector<uint8_t> data = random_float_matrix(s.type, s.n_in, n_out, rng);
    const FloatMatrix m{s.type, data.data(), s.n_in, n_out};
    const int64_t nt = 38;  // two blocks of tokens, the second with a short group
    const std::vector<float> x = random_acts(nt * s.n_in, rng);
    std::vector<float> batch(size_t(nt * n_out)), one(static_cast<size_t>(n_out));
    float_matmul(m, x.data(), nt, batch.data(), n_out, 0, n_out, level);
    for (int64_t t = 0; t < nt; ++t) {
      float_matmul(m, x.data() + t * s.n_in, 1, one.data(), n_out, 0, n_out, level);
      for (int64_t r = 0; r < n_out; ++r) {
        ASSERT_EQ(batch[size_t(t * n_out + r)], one[size_t(r)])
            << name(level) << " " << dtype_name(s.type) << " n_in " << s.n_in << " token " << t
            << " row " << r;
      }
    }
  }
}

// Each level against a double-precision dot product of the decoded rows, and SIMD levels
// against scalar, within 1e-5 of the sum of |terms|.
TEST_P(CpuKernelsAnyLevel, FloatMatmulMatchesDequantizedDot) {
  const CpuLevel level = GetParam();
  std::mt19937 rng(7);
  for (const FloatShape& s : kFloatShapes) {
    for (int64_t n_out : {1, 3, 4, 6, 9, 17, 40}) {  // 17, 40: tiles of eight rows
      const std::vector<uint8_t> data = random_float_matrix(s.type, s.n_in, n_out, rng);
      const FloatMatrix m{s.type, data.data(), s.n_in, n_out};
      std::vector<std::vector<float>> rows;
      for (int64_t r = 0; r < n_out; ++r) rows.push_back(ref_row(s.type, data, s.n_in, r));
      for (int64_t nt : {1, 2, 3, 4, 5, 8, 17}) {
        const std::vector<float> x = random_acts(nt * s.n_in, rng);
        const int64_t stride = n_out + 1;
        std::vector<float> y(size_t(nt * stride), -7.0f), ys(size_t(nt * stride), -7.0f);
        const int64_t split = n_out / 2;
        float_matmul(m, x.data(), nt, y.data(), stride, 0, split, level);
        float_matmul(m, x.data(), nt, y.data(), stride, split, n_out, level);
        float_matmul(m, x.data(), nt, ys.data(), stride, 0, n_out, CpuLevel::Scalar);
        for (int64_t t = 0; t < nt; ++t) {
          for (int64_t r = 0; r < n_out; ++r) {
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < s.n_in; ++k) {
              const double term = double(rows[size_t(r)][size_t(k)]) * x[size_t(t * s.n_in + k)];
              ref += term;
              mag += std::fabs(term);
            }
            const float got = y[size_t(t * stride + r)];
            ASSERT_NEAR(got, ref, 1e-5 * mag)
                << name(level) << " " << dtype_name(s.type) << " n_in " << s.n_in << " n_out "
                << n_out << " tokens " << nt << " r " << r << " t " << t;
            ASSERT_NEAR(got, ys[size_t(t * stride + r)], 1e-5 * mag) << "against scalar";
          }
          EXPECT_EQ(y[size_t(t * stride + n_out)], -7.0f) << "wrote past n_out";
        }
      }
    }
  }
}

// The local packers and decoders of this file and core/quant read FORMATS.md the same way.
TEST(CpuKernelsFormats, AgreeWithCoreQuant) {
  std::mt19937 rng(10);
  TernaryCase t = make_ternary(DType::TQ2_0, 512, 3, 1, rng);
  std::vector<uint8_t> packed(t.data.size());
  pack_tq2_0(t.trits.data(), t.block_d.data(), int64_t(t.trits.size()), packed.data());
  EXPECT_EQ(packed, t.data) << "tq2_0";
  TernaryCase i2 = make_ternary(DType::I2_S, 384, 3, 0, rng);
  packed.assign(i2.data.size(), 0);
  pack_i2_s(i2.trits.data(), i2.scale, int64_t(i2.trits.size()), packed.data());
  EXPECT_EQ(std::vector<uint8_t>(packed.begin(), packed.begin() + 384 * 3 / 4 + 4),
            std::vector<uint8_t>(i2.data.begin(), i2.data.begin() + 384 * 3 / 4 + 4))
      << "i2_s";
  for (const FloatShape& s : kFloatShapes) {
    const std::vector<uint8_t> data = random_float_matrix(s.type, s.n_in, 2, rng);
    std::vector<float> got(static_cast<size_t>(s.n_in));
    dequantize_row(s.type, data.data() + row_bytes(s.type, s.n_in), s.n_in, got.data());
    EXPECT_TRUE(same_bytes(got, ref_row(s.type, data, s.n_in, 1))) << dtype_name(s.type);
  }
}

// The KV caches' conversions at every level equal core/half.h's (round to nearest even):
// every half to f32, and floats near each rounding boundary (ties, subnormals, overflow) to
// half, over lengths with and without a tail. NaNs only need to stay NaNs.
TEST_P(CpuKernelsAnyLevel, HalfConversionsEqualCoreHalf) {
  const CpuLevel level = GetParam();
  std::vector<uint16_t> halves(65536 + 5);
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = uint16_t(i);
  std::vector<float> got(halves.size());
  half_to_float(halves.data(), got.data(), int64_t(halves.size()), level);
  for (size_t i = 0; i < halves.size(); ++i) {
    const float want = fp16_to_f32(halves[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want))
          << name(level) << " " << i;
    }
  }
  std::vector<float> floats;
  std::mt19937 rng(21);
  for (uint32_t h = 0; h < 0x7c00; h += 7) {  // each half, half an ulp away, and a tie
    const float f = fp16_to_f32(uint16_t(h)), g = fp16_to_f32(uint16_t(h + 1));
    for (float x :
         {f, (f + g) / 2, std::nextafter((f + g) / 2, 0.0f), std::nextafter((f + g) / 2, 1e9f)}) {
      floats.push_back(x);
      floats.push_back(-x);
    }
  }
  for (float x : {65504.0f, 65519.0f, 65520.0f, 1e9f, 1e-9f, 3e-8f, 6e-8f,
                  std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()})
    floats.push_back(x);
  std::normal_distribution<float> nd(0, 3);
  for (int i = 0; i < 1001; ++i) floats.push_back(nd(rng));
  for (int64_t n : {int64_t(floats.size()), int64_t(13)}) {
    std::vector<uint16_t> h(size_t(n), 0xffff);
    float_to_half(floats.data(), h.data(), n, level);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = f32_to_fp16(floats[size_t(i)]);
      if (std::isnan(floats[size_t(i)])) {
        EXPECT_TRUE(std::isnan(fp16_to_f32(h[size_t(i)])));
      } else {
        EXPECT_EQ(h[size_t(i)], want) << name(level) << " " << floats[size_t(i)];
      }
    }
  }
}

TEST(CpuFloatMatmul, RejectsBadInput) {
  std::vector<uint8_t> data(1024);
  std::vector<float> x(256), y(4);
  FloatMatrix m{DType::TQ2_0, data.data(), 256, 2};
  EXPECT_THROW(float_matmul(m, x.data(), 1, y.data(), 2, 0, 2), Error);
  m.type = DType::Q6_K;
  m.n_in = 100;
  EXPECT_THROW(float_matmul(m, x.data(), 1, y.data(), 2, 0, 2), Error);
  m.type = DType::F32;
  EXPECT_THROW(float_matrix_row(m, 2, y.data()), Error);
}

}  // namespace
}  // namespace trit::engine
