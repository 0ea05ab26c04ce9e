// Tests of core/quant: hand-made blocks whose bytes are worked out from FORMATS.md, round trips
// for every type, absmean ternarisation and error cases.
#include "core/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "support/errors.h"

namespace trit::engine {
namespace {

using test::error_of;

std::vector<int8_t> random_trits(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(-1, 1);
  std::vector<int8_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = int8_t(dist(rng));
  return t;
}

std::vector<float> random_normal(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = dist(rng);
  return x;
}

void put_u16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v & 0xff);
  p[1] = uint8_t(v >> 8);
}

// ---- absmean -------------------------------------------------------------------------------

TEST(Absmean, KnownAnswerWithHalfEvenTies) {
  // sum |w| = 8, mean = scale = 1: 0.5 ties to 0, 1.5 ties to 2 and clamps to 1.
  const std::vector<float> w = {0.5f, 1.5f, -0.5f, -1.5f, 1.0f, -1.0f, 0.0f, 2.0f};
  std::vector<int8_t> t(w.size());
  EXPECT_EQ(absmean_ternarize(w.data(), int64_t(w.size()), t.data()), 1.0f);
  EXPECT_EQ(t, (std::vector<int8_t>{0, 1, 0, -1, 1, -1, 0, 1}));

  // Same pattern scaled by 0.25 (exact in binary): scale 0.25, same trits.
  std::vector<float> w4(w);
  for (auto& v : w4) v *= 0.25f;
  EXPECT_EQ(absmean_ternarize(w4.data(), int64_t(w4.size()), t.data()), 0.25f);
  EXPECT_EQ(t, (std::vector<int8_t>{0, 1, 0, -1, 1, -1, 0, 1}));

  // Just either side of the tie: mean = (0.49 + 0.51 + 3) / 4 = 1.
  const std::vector<float> w2 = {0.49f, 0.51f, -2.0f, 1.0f};
  t.resize(4);
  EXPECT_FLOAT_EQ(absmean_ternarize(w2.data(), 4, t.data()), 1.0f);
  EXPECT_EQ(t, (std::vector<int8_t>{0, 1, -1, 1}));
}

TEST(Absmean, ZeroTensorUsesFloor) {
  std::vector<float> w(64, 0.0f);
  std::vector<int8_t> t(64, 7);
  EXPECT_EQ(absmean_ternarize(w.data(), 64, t.data()), 1e-5f);
  for (int8_t v : t) EXPECT_EQ(v, 0);

  // Tiny weights: mean 1e-7 < 1e-5, so w / scale = 0.01 rounds to 0; 1e-5 itself gives 1.
  std::vector<float> tiny(64, 1e-7f);
  tiny[3] = 1e-5f;
  EXPECT_EQ(absmean_ternarize(tiny.data(), 64, t.data()), 1e-5f);
  EXPECT_EQ(t[0], 0);
  EXPECT_EQ(t[3], 1);
}

TEST(Absmean, ScaleIsDoubleMeanAsFloat) {
  const auto w = random_normal(4096, 11, 0.02f);
  double sum = 0.0;
  for (float v : w) sum += std::fabs(double(v));
  const float expect = float(sum / 4096.0);
  std::vector<int8_t> t(w.size());
  const float scale = absmean_ternarize(w.data(), 4096, t.data());
  EXPECT_EQ(scale, expect);
  for (size_t i = 0; i < w.size(); ++i) {
    const float r = std::nearbyint(w[i] * (1.0f / scale));
    EXPECT_EQ(t[i], int8_t(r > 1 ? 1 : (r < -1 ? -1 : r))) << i;
  }
}

// ---- ternarize: float weights that may be ternary already -----------------------------------

// llama.cpp's BitNet converter: absmean rounding of master weights, w = trit / (1 / s), in f16.
TEST(Ternarize, KeepsTheScaleOfWeightsThatAreTernaryAlready) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> master(1024), w(1024);
  for (float& v : master) v = normal(rng);
  std::vector<int8_t> want(1024), t(1024);
  const float s = absmean_ternarize(master.data(), 1024, want.data());
  const float inv = 1.0f / s;
  for (size_t i = 0; i < w.size(); ++i) w[i] = fp16_to_f32(f32_to_fp16(float(want[i]) / inv));
  const float s16 = fp16_to_f32(f32_to_fp16(1.0f / inv));
  EXPECT_EQ(ternarize(w.data(), 1024, t.data()), s16);
  EXPECT_EQ(t, want);
  // Absmean would give s16 times the fraction of non-zeros.
  int64_t nonzero = 0;
  for (int8_t v : want) nonzero += v != 0;
  ASSERT_LT(nonzero, 1024);
  EXPECT_FLOAT_EQ(absmean_ternarize(w.data(), 1024, t.data()), s16 * float(nonzero) / 1024.0f);
  // Packed, the values come back unchanged.
  const std::vector<uint8_t> packed = ternarize_float_weights(DType::TQ2_0, w.data(), 1024);
  std::vector<float> back(1024);
  dequantize(DType::TQ2_0, packed.data(), 1024, back.data());
  EXPECT_EQ(back, w);
}

TEST(Ternarize, MasterWeightsGoByAbsmean) {
  std::vector<float> w = {0.5f, -0.5f, 0.25f, 0.0f};  // two magnitudes: not ternary
  w.resize(256, 0.0f);
  std::vector<int8_t> t(256), want(256);
  EXPECT_EQ(ternarize(w.data(), 256, t.data()), absmean_ternarize(w.data(), 256, want.data()));
  EXPECT_EQ(t, want);
  std::vector<float> zeros(256, 0.0f);
  EXPECT_EQ(ternarize(zeros.data(), 256, t.data()), 1e-5f);  // the absmean floor
  EXPECT_EQ(t, std::vector<int8_t>(256, 0));
  std::vector<float> one = zeros;
  one[7] = -0.125f;  // one non-zero: ternary, s = 0.125
  EXPECT_EQ(ternarize(one.data(), 256, t.data()), 0.125f);
  EXPECT_EQ(t[7], -1);
  // A ternary tensor whose s is below absmean's 1e-5 floor keeps its codes and its s.
  std::vector<float> small = zeros;
  small[3] = 2e-6f;
  small[9] = -2e-6f;
  EXPECT_EQ(ternarize(small.data(), 256, t.data()), 2e-6f);
  EXPECT_EQ(t[3], 1);
  EXPECT_EQ(t[9], -1);
}

// ---- TQ2_0 ---------------------------------------------------------------------------------

TEST(TQ2_0, HandMadeBlock) {
  uint8_t blk[66];
  std::memset(blk, 0x55, 64);  // every code 1: weight 0
  // Byte 0 (h = 0, m = 0): bits 1..0 = 10 -> weight 0 = +1; bits 3..2 = 00 -> weight 32 = -1;
  // bits 5..4 = 01 -> weight 64 = 0; bits 7..6 = 10 -> weight 96 = +1.
  blk[0] = 0b10'01'00'10;
  // Byte 32 + 5 (h = 1, m = 5): weights 133, 165, 197, 229 = 0, -1, +1, -1.
  blk[37] = 0b00'10'00'01;
  put_u16(blk + 64, 0x3800);  // d = 0.5

  std::vector<int8_t> expect(256, 0);
  expect[0] = 1;
  expect[32] = -1;
  expect[64] = 0;
  expect[96] = 1;
  expect[133] = 0;
  expect[165] = -1;
  expect[197] = 1;
  expect[229] = -1;

  const TernaryUnpacked u = unpack_ternary(DType::TQ2_0, blk, 256);
  EXPECT_EQ(u.trits, expect);
  ASSERT_EQ(u.block_scales.size(), 1u);
  EXPECT_EQ(u.block_scales[0], 0.5f);

  std::vector<float> deq(256);
  dequantize(DType::TQ2_0, blk, 256, deq.data());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(deq[i], 0.5f * float(expect[i])) << i;

  // And the packer writes the same bytes.
  const float d = 0.5f;
  std::vector<uint8_t> packed(66);
  pack_tq2_0(expect.data(), &d, 256, packed.data());
  EXPECT_EQ(std::memcmp(packed.data(), blk, 66), 0);
}

TEST(TQ2_0, RejectsCode3) {
  uint8_t blk[66] = {};
  blk[10] = 0b00'11'00'00;
  EXPECT_THROW(unpack_ternary(DType::TQ2_0, blk, 256), Error);
}

TEST(TQ2_0, RoundTripPerBlockScales) {
  const int64_t n = 1024;
  const auto t = random_trits(n, 1);
  const float scales[4] = {0.5f, 0.0123f, 2.0f, 1e-3f};
  std::vector<uint8_t> buf(4 * 66);
  pack_tq2_0(t.data(), scales, n, buf.data());
  const TernaryUnpacked u = unpack_ternary(DType::TQ2_0, buf.data(), n);
  EXPECT_EQ(u.trits, t);
  ASSERT_EQ(u.block_scales.size(), 4u);
  for (int b = 0; b < 4; ++b) EXPECT_EQ(u.block_scales[b], fp16_to_f32(f32_to_fp16(scales[b])));
  std::vector<float> deq(n);
  dequantize(DType::TQ2_0, buf.data(), n, deq.data());
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(deq[i], float(t[i]) * u.block_scales[i / 256]);
}

// ---- TQ1_0 ---------------------------------------------------------------------------------

// ceil(v * 256 / 243), worked out in the test from FORMATS.md.
uint8_t tq1_store(int v) {
  return uint8_t((v * 256 + 242) / 243);
}

TEST(TQ1_0, HandMadeBlock) {
  uint8_t blk[54];
  // Five zero trits are codes 1,1,1,1,1: v = 81 + 27 + 9 + 3 + 1 = 121, stored ceil(127.47) = 128.
  std::memset(blk, 128, 48);
  // qh: four zero trits and a fifth zero code: v = 120, stored ceil(126.42) = 127.
  std::memset(blk + 48, 127, 4);
  // qs[0] holds weights 0, 32, 64, 96, 128 = +1, -1, 0, +1, -1: codes 2,0,1,2,0,
  // v = 2*81 + 0*27 + 1*9 + 2*3 + 0 = 177, stored ceil(186.47) = 187.
  blk[0] = 187;
  // qs[32] holds weights 160, 176, 192, 208, 224 = -1, +1, 0, 0, +1: codes 0,2,1,1,2,
  // v = 0 + 54 + 9 + 3 + 2 = 68, stored ceil(71.64) = 72.
  blk[32] = 72;
  // qh[1] holds weights 241, 245, 249, 253 = +1, +1, -1, 0: codes 2,2,0,1 and a fifth 0,
  // v = 162 + 54 + 0 + 3 + 0 = 219, stored ceil(230.72) = 231.
  blk[49] = 231;
  put_u16(blk + 52, 0x3c00);  // d = 1

  std::vector<int8_t> expect(256, 0);
  expect[0] = 1, expect[32] = -1, expect[64] = 0, expect[96] = 1, expect[128] = -1;
  expect[160] = -1, expect[176] = 1, expect[192] = 0, expect[208] = 0, expect[224] = 1;
  expect[241] = 1, expect[245] = 1, expect[249] = -1, expect[253] = 0;

  const TernaryUnpacked u = unpack_ternary(DType::TQ1_0, blk, 256);
  EXPECT_EQ(u.trits, expect);
  ASSERT_EQ(u.block_scales.size(), 1u);
  EXPECT_EQ(u.block_scales[0], 1.0f);

  std::vector<float> deq(256);
  dequantize(DType::TQ1_0, blk, 256, deq.data());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(deq[i], float(expect[i])) << i;

  const float d = 1.0f;
  std::vector<uint8_t> packed(54);
  pack_tq1_0(expect.data(), &d, 256, packed.data());
  EXPECT_EQ(std::memcmp(packed.data(), blk, 54), 0);
}

TEST(TQ1_0, EveryBase3ValueDecodes) {
  // For every five-digit base-3 value, the stored byte in qs[7] decodes to its digits (first
  // digit most significant) at weights 7, 39, 71, 103, 135.
  uint8_t blk[54];
  std::memset(blk, 128, 48);
  std::memset(blk + 48, 127, 4);
  put_u16(blk + 52, 0x3c00);
  for (int v = 0; v < 243; ++v) {
    blk[7] = tq1_store(v);
    const TernaryUnpacked u = unpack_ternary(DType::TQ1_0, blk, 256);
    int rest = v;
    for (int n = 4; n >= 0; --n) {
      EXPECT_EQ(u.trits[size_t(7 + 32 * n)], rest % 3 - 1) << "v=" << v << " n=" << n;
      rest /= 3;
    }
    // The packer agrees on the byte.
    const float d = 1.0f;
    std::vector<uint8_t> packed(54);
    pack_tq1_0(u.trits.data(), &d, 256, packed.data());
    EXPECT_EQ(packed[7], blk[7]) << "v=" << v;
  }
}

TEST(TQ1_0, RoundTripAndConversionToTQ2_0) {
  const int64_t n = 2048;
  const auto t = random_trits(n, 2);
  std::vector<float> scales(8);
  for (int b = 0; b < 8; ++b) scales[b] = 0.01f * float(b + 1);
  std::vector<uint8_t> tq1(8 * 54);
  pack_tq1_0(t.data(), scales.data(), n, tq1.data());
  const TernaryUnpacked u = unpack_ternary(DType::TQ1_0, tq1.data(), n);
  EXPECT_EQ(u.trits, t);
  for (int b = 0; b < 8; ++b) EXPECT_EQ(u.block_scales[b], fp16_to_f32(f32_to_fp16(scales[b])));

  std::vector<uint8_t> tq2(8 * 66);
  tq1_0_to_tq2_0(tq1.data(), n, tq2.data());
  const TernaryUnpacked u2 = unpack_ternary(DType::TQ2_0, tq2.data(), n);
  EXPECT_EQ(u2.trits, t);
  EXPECT_EQ(u2.block_scales, u.block_scales);
  for (int b = 0; b < 8; ++b) {
    EXPECT_EQ(std::memcmp(tq2.data() + 66 * b + 64, tq1.data() + 54 * b + 52, 2), 0);
  }
  std::vector<float> d1(n), d2(n);
  dequantize(DType::TQ1_0, tq1.data(), n, d1.data());
  dequantize(DType::TQ2_0, tq2.data(), n, d2.data());
  EXPECT_EQ(d1, d2);
}

// ---- I2_S ----------------------------------------------------------------------------------

TEST(I2_S, HandMadeTensor) {
  // 256 weights: two runs of 32 bytes, then the 32-byte tail.
  uint8_t buf[64 + 32];
  std::memset(buf, 0x55, 64);  // every code 1: weight 0
  // Byte 0: bits 7..6 = 10 -> weight 0 = +1; bits 5..4 = 01 -> weight 32 = 0;
  // bits 3..2 = 00 -> weight 64 = -1; bits 1..0 = 10 -> weight 96 = +1.
  buf[0] = 0b10'01'00'10;
  // Byte 32 + 5 (second run, m = 5): weights 133, 165, 197, 229 = -1, 0, +1, +1.
  buf[37] = 0b00'01'10'10;
  const float scale = 0.75f;
  std::memset(buf + 64, 0, 32);
  std::memcpy(buf + 64, &scale, 4);

  std::vector<int8_t> expect(256, 0);
  expect[0] = 1, expect[32] = 0, expect[64] = -1, expect[96] = 1;
  expect[133] = -1, expect[165] = 0, expect[197] = 1, expect[229] = 1;

  const TernaryUnpacked u = unpack_ternary(DType::I2_S, buf, 256);
  EXPECT_EQ(u.trits, expect);
  ASSERT_EQ(u.block_scales.size(), 1u);
  EXPECT_EQ(u.block_scales[0], 0.75f);

  std::vector<float> deq(256);
  dequantize(DType::I2_S, buf, 256, deq.data());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(deq[i], 0.75f * float(expect[i])) << i;

  std::vector<uint8_t> packed(96);
  pack_i2_s(expect.data(), scale, 256, packed.data());
  EXPECT_EQ(std::memcmp(packed.data(), buf, 96), 0);
}

TEST(I2_S, RoundTripAndTail) {
  const int64_t n = 128 * 5;
  const auto t = random_trits(n, 3);
  const std::vector<uint8_t> buf = pack_ternary(DType::I2_S, t.data(), n, 0.0371f);
  ASSERT_EQ(buf.size(), size_t(n / 4 + 32));
  float s;
  std::memcpy(&s, buf.data() + n / 4, 4);
  EXPECT_EQ(s, 0.0371f);
  for (int i = 4; i < 32; ++i) EXPECT_EQ(buf[size_t(n / 4 + i)], 0) << i;
  const TernaryUnpacked u = unpack_ternary(DType::I2_S, buf.data(), n);
  EXPECT_EQ(u.trits, t);
  EXPECT_EQ(u.block_scales, std::vector<float>{0.0371f});
}

TEST(I2_S, RejectsCode3AndRowDecode) {
  uint8_t buf[32 + 32] = {};
  buf[3] = 0b11'00'00'00;
  EXPECT_THROW(unpack_ternary(DType::I2_S, buf, 128), Error);
  float out[128];
  EXPECT_THROW(dequantize_row(DType::I2_S, buf, 128, out), Error);
}

// ---- quantize of ternary types ------------------------------------------------------------

TEST(Ternary, QuantizeIsAbsmeanThenPack) {
  const int64_t n = 1024;
  const auto w = random_normal(n, 4, 0.03f);
  std::vector<int8_t> t(n);
  const float scale = absmean_ternarize(w.data(), n, t.data());
  for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    const std::vector<uint8_t> q = quantize(type, w.data(), n);
    EXPECT_EQ(q, pack_ternary(type, t.data(), n, scale)) << dtype_name(type);
    EXPECT_EQ(q.size(), *tensor_bytes(type, n, n)) << dtype_name(type);
    const TernaryUnpacked u = unpack_ternary(type, q.data(), n);
    EXPECT_EQ(u.trits, t) << dtype_name(type);
    const float d = type == DType::I2_S ? scale : fp16_to_f32(f32_to_fp16(scale));
    for (float bs : u.block_scales) EXPECT_EQ(bs, d);
    std::vector<float> deq(n);
    dequantize(type, q.data(), n, deq.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(deq[i], float(t[i]) * d) << dtype_name(type);
  }
}

// ---- float types ---------------------------------------------------------------------------

TEST(Float, F32Copy) {
  const auto x = random_normal(100, 5);
  const std::vector<uint8_t> q = quantize(DType::F32, x.data(), 100);
  ASSERT_EQ(q.size(), 400u);
  std::vector<float> y(100);
  dequantize(DType::F32, q.data(), 100, y.data());
  EXPECT_EQ(y, x);
}

TEST(Float, F16AndBF16ExactForRepresentable) {
  std::vector<uint16_t> bits;
  for (uint32_t b = 0; b < 65536; ++b) {
    if ((b & 0x7c00) != 0x7c00) bits.push_back(uint16_t(b));  // skip inf / nan
  }
  const int64_t n = int64_t(bits.size());
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = fp16_to_f32(bits[i]);
  std::vector<uint8_t> q = quantize(DType::F16, x.data(), n);
  ASSERT_EQ(q.size(), bits.size() * 2);
  EXPECT_EQ(std::memcmp(q.data(), bits.data(), q.size()), 0);
  std::vector<float> y(bits.size());
  dequantize(DType::F16, q.data(), n, y.data());
  for (size_t i = 0; i < bits.size(); ++i) ASSERT_EQ(std::memcmp(&x[i], &y[i], 4), 0) << i;

  bits.clear();
  for (uint32_t b = 0; b < 65536; ++b) {
    if ((b & 0x7f80) != 0x7f80) bits.push_back(uint16_t(b));
  }
  x.resize(bits.size());
  y.resize(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = bf16_to_f32(bits[i]);
  q = quantize(DType::BF16, x.data(), int64_t(bits.size()));
  EXPECT_EQ(std::memcmp(q.data(), bits.data(), q.size()), 0);
  dequantize(DType::BF16, q.data(), int64_t(bits.size()), y.data());
  for (size_t i = 0; i < bits.size(); ++i) ASSERT_EQ(std::memcmp(&x[i], &y[i], 4), 0) << i;
}

TEST(Float, F16RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to 1 (even mantissa).
  const float x[2] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f};
  const std::vector<uint8_t> q = quantize(DType::F16, x, 2);
  EXPECT_EQ(q[0] | (q[1] << 8), 0x3c00);
  EXPECT_EQ(q[2] | (q[3] << 8), 0x3c02);  // 1 + 3 * 2^-11 ties up to 1 + 2^-9
}

// ---- Q8_0 ----------------------------------------------------------------------------------

TEST(Q8_0, HandMadeBlock) {
  uint8_t blk[34] = {};
  put_u16(blk, 0x3800);  // d = 0.5
  const int8_t q[32] = {1, -3, 0, 127, -128, 5};
  std::memcpy(blk + 2, q, 32);
  float y[32];
  dequantize_row(DType::Q8_0, blk, 32, y);
  const float expect[6] = {0.5f, -1.5f, 0.0f, 63.5f, -64.0f, 2.5f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], expect[i]) << i;
  for (int i = 6; i < 32; ++i) EXPECT_EQ(y[i], 0.0f) << i;
}

TEST(Q8_0, QuantizeKnownBlock) {
  // amax = 127, so d = 1 and q = round(x) with halves away from zero.
  float x[32] = {};
  x[0] = 127.0f, x[1] = -2.5f, x[2] = 2.5f, x[3] = 0.49f, x[4] = -100.0f;
  const std::vector<uint8_t> q = quantize(DType::Q8_0, x, 32);
  ASSERT_EQ(q.size(), 34u);
  EXPECT_EQ(q[0] | (q[1] << 8), 0x3c00);
  EXPECT_EQ(int8_t(q[2]), 127);
  EXPECT_EQ(int8_t(q[3]), -3);
  EXPECT_EQ(int8_t(q[4]), 3);
  EXPECT_EQ(int8_t(q[5]), 0);
  EXPECT_EQ(int8_t(q[6]), -100);
}

TEST(Q8_0, RoundTripWithinHalfStep) {
  const int64_t n = 32 * 64;
  const auto x = random_normal(n, 6);
  const std::vector<uint8_t> q = quantize(DType::Q8_0, x.data(), n);
  ASSERT_EQ(q.size(), size_t(n / 32 * 34));
  std::vector<float> y(n);
  dequantize(DType::Q8_0, q.data(), n, y.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    const float d16 = fp16_to_f32(uint16_t(q[size_t(34 * b)] | (q[size_t(34 * b + 1)] << 8)));
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[size_t(32 * b + j)]));
    // Half a step, plus the fp16 rounding of d times |q| <= 127 (levels come from the f32 d,
    // as in llama.cpp's reference).
    const float tol = d16 / 2 + 127 * std::fabs(amax / 127 - d16) + 1e-6f;
    for (int j = 0; j < 32; ++j) {
      const size_t i = size_t(32 * b + j);
      ASSERT_LE(std::fabs(y[i] - x[i]), tol) << i;
    }
  }
}

// ---- Q6_K ----------------------------------------------------------------------------------

TEST(Q6_K, HandMadeBlock) {
  uint8_t blk[210] = {};  // ql[128], qh[64], scales[16], d at 208
  uint8_t* ql = blk;
  uint8_t* qh = blk + 128;
  int8_t* sc = reinterpret_cast<int8_t*>(blk + 192);
  put_u16(blk + 208, 0x3400);  // d = 0.25
  sc[0] = 2, sc[4] = -3, sc[12] = 5, sc[15] = 1;
  // e = 0 (h 0, r 0): low nibble of ql[0], qh[0] bits 1..0. q = 45 = 0b10'1101 -> 13.
  ql[0] = 0x0d;
  qh[0] = 0b10;
  // e = 70 (h 0, r 70): high nibble of ql[6], qh[6] bits 5..4. q = 5 -> -27.
  ql[6] = 0x50;
  // e = 200 (h 1, r 72): high nibble of ql[72], qh[40] bits 5..4. q = 63 -> 31.
  ql[72] = 0xf0;
  qh[40] = 3 << 4;
  // e = 255 (h 1, r 127): high nibble of ql[127], qh[63] bits 7..6. q = 48 -> 16.
  qh[63] = 3 << 6;
  // e = 38 (h 0, r 38): low nibble of ql[38], qh[6] bits 3..2. q = 0b01'0111 = 23 -> -9.
  ql[38] = 0x07;
  qh[6] |= 1 << 2;

  float y[256];
  dequantize_row(DType::Q6_K, blk, 256, y);
  EXPECT_EQ(y[0], 0.25f * 2 * 13);
  EXPECT_EQ(y[6], 0.25f * 2 * -32);  // shares ql[6] and qh[6] with e = 70, all bits zero
  EXPECT_EQ(y[70], 0.25f * -3 * -27);
  EXPECT_EQ(y[200], 0.25f * 5 * 31);
  EXPECT_EQ(y[255], 0.25f * 1 * 16);
  EXPECT_EQ(y[38], 0.25f * 0 * -9);  // sub-block 2 has scale 0
  EXPECT_EQ(y[16], 0.0f);

  // Same block with sub-block 2's scale set: e = 38 reads back -9.
  sc[2] = 4;
  dequantize_row(DType::Q6_K, blk, 256, y);
  EXPECT_EQ(y[38], 0.25f * 4 * -9);
}

TEST(Q6_K, RoundTripError) {
  const int64_t n = 256 * 32;
  auto x = random_normal(n, 7, 0.02f);
  for (int i = 0; i < 16; ++i) x[size_t(256 * 3 + i)] = 0.0f;  // an all-zero sub-block
  const std::vector<uint8_t> q = quantize(DType::Q6_K, x.data(), n);
  ASSERT_EQ(q.size(), size_t(n / 256 * 210));
  std::vector<float> y(n);
  dequantize(DType::Q6_K, q.data(), n, y.data());
  double err2 = 0.0, sig2 = 0.0;
  for (int64_t b = 0; b < n / 256; ++b) {
    const uint8_t* blk = q.data() + 210 * b;
    const float d = fp16_to_f32(uint16_t(blk[208] | (blk[209] << 8)));
    for (int e = 0; e < 256; ++e) {
      const size_t i = size_t(256 * b + e);
      // At most one step of the sub-block (half a step, or one at the clamped end).
      const float step = std::fabs(d * float(int8_t(blk[192 + e / 16])));
      ASSERT_LE(std::fabs(y[i] - x[i]), step * 1.0001f + 1e-9f) << i;
      err2 += double(y[i] - x[i]) * double(y[i] - x[i]);
      sig2 += double(x[i]) * double(x[i]);
    }
  }
  for (int i = 0; i < 16; ++i) EXPECT_EQ(y[size_t(256 * 3 + i)], 0.0f);
  const double rel = std::sqrt(err2 / sig2);
  // 64 levels over the range of 16 gaussian weights: step ~ 2 sigma / 32, rms error ~ 1.8%.
  EXPECT_LT(rel, 0.02);
  RecordProperty("q6_k_relative_rms_error", std::to_string(rel));
}

TEST(Q6_K, ZeroBlock) {
  std::vector<float> x(256, 0.0f);
  const std::vector<uint8_t> q = quantize(DType::Q6_K, x.data(), 256);
  for (uint8_t b : q) EXPECT_EQ(b, 0);
  std::vector<float> y(256, 1.0f);
  dequantize(DType::Q6_K, q.data(), 256, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

// ---- dispatch and errors -------------------------------------------------------------------

TEST(Dequantize, RowMatchesWhole) {
  const int64_t ne0 = 512, rows = 3;
  const auto x = random_normal(ne0 * rows, 8);
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q6_K, DType::TQ1_0,
                     DType::TQ2_0}) {
    const std::vector<uint8_t> q = quantize(type, x.data(), ne0 * rows);
    std::vector<float> whole(static_cast<size_t>(ne0 * rows));
    std::vector<float> row(static_cast<size_t>(ne0));
    dequantize(type, q.data(), ne0 * rows, whole.data());
    const int64_t rb = row_bytes(type, ne0);
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(type, q.data() + r * rb, ne0, row.data());
      for (int64_t i = 0; i < ne0; ++i) ASSERT_EQ(row[i], whole[size_t(r * ne0 + i)]);
    }
  }
}

TEST(Errors, CountNotMultipleOfBlock) {
  std::vector<int8_t> t(512, 0);
  std::vector<uint8_t> out(4096);
  std::vector<float> x(512, 0.0f);
  float scale = 1.0f;
  const std::string msg = error_of([&] { pack_ternary(DType::TQ2_0, t.data(), 300, 1.0f); });
  EXPECT_NE(msg.find("pack_ternary"), std::string::npos) << msg;
  EXPECT_NE(msg.find("n=300 is not a multiple of 256"), std::string::npos) << msg;
  EXPECT_THROW(pack_tq1_0(t.data(), &scale, 100, out.data()), Error);
  EXPECT_THROW(pack_tq2_0(t.data(), &scale, 257, out.data()), Error);
  EXPECT_THROW(pack_i2_s(t.data(), 1.0f, 100, out.data()), Error);
  EXPECT_THROW(unpack_ternary(DType::I2_S, out.data(), 64), Error);
  EXPECT_THROW(unpack_ternary(DType::TQ1_0, out.data(), 255), Error);
  EXPECT_THROW(quantize(DType::Q8_0, x.data(), 33), Error);
  EXPECT_THROW(quantize(DType::Q6_K, x.data(), 128), Error);
  EXPECT_THROW(dequantize(DType::Q8_0, out.data(), 48, x.data()), Error);
  EXPECT_THROW(dequantize_row(DType::TQ2_0, out.data(), 128, x.data()), Error);
  EXPECT_THROW(tq1_0_to_tq2_0(out.data(), 200, out.data() + 1024), Error);
  EXPECT_THROW(absmean_ternarize(x.data(), -1, t.data()), Error);
}

TEST(Errors, BadInputs) {
  std::vector<int8_t> t(256, 0);
  std::vector<uint8_t> out(4096);
  t[17] = 2;
  const std::string msg = error_of([&] { pack_ternary(DType::TQ2_0, t.data(), 256, 1.0f); });
  EXPECT_NE(msg.find("trit 17"), std::string::npos) << msg;
  t[17] = 0;
  EXPECT_THROW(pack_ternary(DType::Q8_0, t.data(), 256, 1.0f), Error);
  EXPECT_THROW(unpack_ternary(DType::F16, out.data(), 256), Error);
  EXPECT_THROW(pack_ternary(DType::TQ1_0, t.data(), 256, 1e6f), Error);  // overflows fp16
  EXPECT_THROW(pack_ternary(DType::TQ2_0, t.data(), 256, NAN), Error);
  std::vector<float> x(256, 0.5f);
  x[9] = NAN;
  EXPECT_THROW(quantize(DType::Q8_0, x.data(), 256), Error);
  EXPECT_THROW(quantize(DType::Q6_K, x.data(), 256), Error);
  EXPECT_THROW(quantize(DType::TQ2_0, x.data(), 256), Error);
}

}  // namespace
}  // namespace trit::engine
