// exp_lanes.h: one exp for scalar code and for eight lanes at a time (GCC/Clang vector types,
// compiled again for AVX2 and AVX-512 as attention_rows.cpp's loops are).
#include "backend/cpu/exp_lanes.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "backend/cpu/simd_lanes.h"

namespace trit::engine {
namespace {

using lanes::kLane;
using lanes::Lane;
using IntLane = int32_t __attribute__((vector_size(32)));

// Vectors go through references (simd_lanes.h: by value they change the baseline's ABI).

// 2^n for integral n in [-126, 128] (128 gives infinity): the float with exponent n + 127.
TRIT_LANES_INLINE void pow2(const float& n, float& out) {
  const uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
  std::memcpy(&out, &bits, sizeof out);
}
TRIT_LANES_INLINE void pow2(const Lane& n, Lane& out) {
  const IntLane bits = (__builtin_convertvector(n, IntLane) + 127) << 23;
  std::memcpy(&out, &bits, sizeof out);
}

// v = c ? a : v, lane by lane (c a comparison's result: a bool, or a mask of lanes).
template <typename T, typename C>
TRIT_LANES_INLINE void pick(T& v, const C& c, const T& a) {
  v = c ? a : v;
}

// x = e^x with the same operations on a float or on eight lanes. Arguments are clamped into
// the range before the integer conversion (NaN to 0), so that no conversion is out of range;
// NaN and values below kLo are put back at the end.
template <typename T>
TRIT_LANES_INLINE void exp_of(T& x) {
  constexpr float kLo = -87.33654f;      // ln of the smallest normal float
  constexpr float kHi = 88.72284f;       // ln of the largest float
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: t + kRound - kRound rounds t to an integer
  const T z0 = T{} + 0.0f, lo = T{} + kLo, hi = T{} + kHi;  // (in every lane)
  T xc = x;
  pick(xc, x < kLo, lo);
  pick(xc, xc > kHi, hi);
  pick(xc, xc != xc, z0);
  const T n = (xc * 1.44269504088896341f + kRound) - kRound;
  // x - n ln 2, ln 2 = 0.693359375 - 2.12194440e-4: the first product is exact.
  T r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const T z = r * r;
  T y = T{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = (y * z + r) + 1.0f;
  T p;
  pow2(n, p);
  T e = y * p;
  pick(e, x < kLo, z0);
  pick(e, x != x, x);
  x = e;
}

TRIT_LANES_INLINE void exp_shifted_portable(float* x, int64_t n, float shift) {
  int64_t i = 0;
  for (; i + kLane <= n; i += kLane) {
    Lane v;
    lanes::load(v, x + i);
    v = v - shift;
    exp_of(v);
    lanes::store(x + i, v);
  }
  for (; i < n; ++i) {
    float v = x[i] - shift;
    exp_of(v);
    x[i] = v;
  }
}

void exp_shifted_baseline(float* x, int64_t n, float shift) {
  exp_shifted_portable(x, n, shift);
}

#ifdef TRIT_LANES_X86
TRIT_LANES_AVX2 void exp_shifted_avx2(float* x, int64_t n, float shift) {
  exp_shifted_portable(x, n, shift);
}
TRIT_LANES_AVX512 void exp_shifted_avx512(float* x, int64_t n, float shift) {
  exp_shifted_portable(x, n, shift);
}
#endif

}  // namespace

[[gnu::noinline]] float max_of(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float exp_f32(float x) {
  exp_of(x);
  return x;
}

void exp_shifted(float* x, int64_t n, float shift, CpuLevel level) {
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_LANES_X86
    case CpuLevel::Avx512Vnni:
      exp_shifted_avx512(x, n, shift);
      return;
    case CpuLevel::Avx2:
      exp_shifted_avx2(x, n, shift);
      return;
#endif
    default:
      exp_shifted_baseline(x, n, shift);
  }
}

}  // namespace trit::engine
