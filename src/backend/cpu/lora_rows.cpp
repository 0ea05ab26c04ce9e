// lora_rows.h: the up-projection's sums with outputs as lanes, held in registers over the rank.
//
// Portable C++ on GCC/Clang vector types, compiled again for AVX2 on x86; AVX-512 has its own
// with masked tails. Every output's value is the scalar loop's: acc = 0, acc += b * a for each
// rank index in order, y += acc * s.
#include "backend/cpu/lora_rows.h"

#include <algorithm>

#include "backend/cpu/simd_lanes.h"

namespace trit::engine {
namespace {

using lanes::kLane;
using lanes::Lane;
constexpr int kChunk = 8;  // lanes of outputs held in registers (64 outputs)

// Outputs [o, o + L * kLane) of every token.
template <int L>
TRIT_LANES_INLINE void lanes_portable(const float* bt, int64_t ldb, const float* ax, int64_t T,
                                      int64_t r, int64_t o, float s, float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; ++t) {
    Lane acc[L] = {};
    for (int64_t k = 0; k < r; ++k) {
      const float a = ax[t * r + k];
      for (int c = 0; c < L; ++c) {
        Lane b;
        lanes::load(b, bt + k * ldb + o + c * kLane);
        acc[c] += b * a;
      }
    }
    for (int c = 0; c < L; ++c) {
      Lane yv;
      float* yp = y + t * ldy + o + c * kLane;
      lanes::load(yv, yp);
      yv += acc[c] * s;
      lanes::store(yp, yv);
    }
  }
}

TRIT_LANES_INLINE void block_portable(const float* bt, int64_t ldb, const float* ax, int64_t T,
                                      int64_t r, int64_t m, float s, float* y, int64_t ldy) {
  int64_t o = 0;
  for (; o + kChunk * kLane <= m; o += kChunk * kLane) {
    lanes_portable<kChunk>(bt, ldb, ax, T, r, o, s, y, ldy);
  }
  for (; o + kLane <= m; o += kLane) lanes_portable<1>(bt, ldb, ax, T, r, o, s, y, ldy);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = o; i < m; ++i) {
      float acc = 0;
      for (int64_t k = 0; k < r; ++k) acc += bt[k * ldb + i] * ax[t * r + k];
      y[t * ldy + i] += acc * s;
    }
  }
}

void block_baseline(const float* bt, int64_t ldb, const float* ax, int64_t T, int64_t r, int64_t m,
                    float s, float* y, int64_t ldy) {
  block_portable(bt, ldb, ax, T, r, m, s, y, ldy);
}

#ifdef TRIT_LANES_X86
TRIT_LANES_AVX2 void block_avx2(const float* bt, int64_t ldb, const float* ax, int64_t T, int64_t r,
                                int64_t m, float s, float* y, int64_t ldy) {
  block_portable(bt, ldb, ax, T, r, m, s, y, ldy);
}

// Outputs [o, o + 16 * L), the last vector masked to `last` lanes.
template <int L>
TRIT_LANES_AVX512 TRIT_LANES_INLINE void lanes_avx512(const float* bt, int64_t ldb, const float* ax,
                                                      int64_t T, int64_t r, int64_t o,
                                                      __mmask16 last, float s, float* y,
                                                      int64_t ldy) {
  const __m512 sv = _mm512_set1_ps(s);
  for (int64_t t = 0; t < T; ++t) {
    __m512 acc[L];
    for (int c = 0; c < L; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t k = 0; k < r; ++k) {
      const __m512 a = _mm512_set1_ps(ax[t * r + k]);
      const float* bk = bt + k * ldb + o;
      for (int c = 0; c < L; ++c) {
        const __mmask16 mk = c == L - 1 ? last : __mmask16(0xFFFF);
        acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, bk + 16 * c), a));
      }
    }
    float* yt = y + t * ldy + o;
    for (int c = 0; c < L; ++c) {
      const __mmask16 mk = c == L - 1 ? last : __mmask16(0xFFFF);
      const __m512 yv = _mm512_maskz_loadu_ps(mk, yt + 16 * c);
      _mm512_mask_storeu_ps(yt + 16 * c, mk, _mm512_add_ps(yv, _mm512_mul_ps(acc[c], sv)));
    }
  }
}

TRIT_LANES_AVX512 void block_avx512(const float* bt, int64_t ldb, const float* ax, int64_t T,
                                    int64_t r, int64_t m, float s, float* y, int64_t ldy) {
  constexpr int kVecs = 8;  // 128 outputs in registers
  int64_t o = 0;
  for (; o + 16 * kVecs <= m; o += 16 * kVecs) {
    lanes_avx512<kVecs>(bt, ldb, ax, T, r, o, __mmask16(0xFFFF), s, y, ldy);
  }
  for (; o < m; o += 16) {
    const int64_t n = std::min<int64_t>(16, m - o);
    const __mmask16 last = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
    lanes_avx512<1>(bt, ldb, ax, T, r, o, last, s, y, ldy);
  }
}
#endif

}  // namespace

void lora_b_block(const float* bt, int64_t ldb, const float* ax, int64_t T, int64_t r, int64_t m,
                  float s, float* y, int64_t ldy, CpuLevel level) {
  if (T <= 0 || m <= 0) return;
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_LANES_X86
    case CpuLevel::Avx512Vnni:
      block_avx512(bt, ldb, ax, T, r, m, s, y, ldy);
      return;
    case CpuLevel::Avx2:
      block_avx2(bt, ldb, ax, T, r, m, s, y, ldy);
      return;
#endif
    default:
      block_baseline(bt, ldb, ax, T, r, m, s, y, ldy);
  }
}

}  // namespace trit::engine
