// AVX-512 (F, BW, VL, DQ, VNNI) versions of the CPU kernels. Compiled with -mavx512* flags and
// entered only when detect_cpu_level() reports Avx512Vnni.
//
// Ternary x int8 (TQ2_0 and I2_S). Both formats pack 128 weights into a run of 32 bytes whose
// 2-bit fields at one position hold 32 consecutive weights (TQ2_0 group g at bits 2g, I2_S at
// bits 6 - 2g). A run broadcast to both halves of a zmm register and masked differently per
// half gives the codes of 64 consecutive weights, each scaled by 4^s for its bit position s,
// which meet 64 consecutive int8 activations in one vpdpbusd (unsigned code times signed q);
// one exact arithmetic shift per accumulator lane removes the factor at the end. With
// trit = c - 1,
//   sum(trit * q) = sum(c * q) - sum(q),
// and sum(q) comes with the quantised activations. A tile of R rows x T tokens keeps R x T
// int32 accumulators, so each weight run is decoded once per T tokens and each activation
// vector serves R rows; weights are prefetched ~16 KB ahead. The integer results are exact and
// the float epilogue is the scalar expression (no FMA contraction), so the output equals the
// scalar kernel bit for bit.
//
// TQ1_0 (five base-3 digits a byte) for up to four tokens: the digits looked up in tables with
// AVX-512 VBMI's byte permutations where the processor has them (tq1_lut_tile), else computed
// with 16-bit multiplies (ternary_run_tq1); for more tokens each tile of rows is made TQ2_0
// first (tq1_to_tq2_rows_avx2) and goes through the TQ2_0 tiles.
//
// Float weights (f32, f16, bf16, q8_0, q6_K) x f32 activations: for one to three tokens the
// weights are decoded in registers and fed to FMAs (bandwidth bound); for four and more each
// tile of rows is decoded once to f32 scratch and reused by every group of four tokens.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__AVX512DQ__) && defined(__F16C__)

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/x86_intrinsics.h"

namespace trit::engine::cpu {
namespace {

// ---- helpers (local to this file: see kernels_impl.h) ----

// a * b rounded to float on its own: the empty asm hides the product from the optimiser, so
// `acc + product(a, b)` is never fused into an FMA (GCC contracts by default in C++ even under
// -std=c++20), and the float epilogue matches the scalar kernel bit for bit.
inline float product(float a, float b) {
  float p = a * b;
  __asm__("" : "+x"(p));
  return p;
}

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline __mmask16 tail_mask16(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

// Sums of four int32 vectors: lanes [sum a, sum b, sum c, sum d].
inline __m128i reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i s2 = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(s2), _mm256_extracti128_si256(s2, 1));
}

inline int32_t hsum_epi32(__m512i v) {
  const __m256i a = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i b = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  b = _mm_add_epi32(b, _mm_shuffle_epi32(b, 0x4e));
  b = _mm_add_epi32(b, _mm_shuffle_epi32(b, 0xb1));
  return _mm_cvtsi128_si32(b);
}

// Largest lane (no NaNs).
inline float hmax_ps(__m512 v) {
  const __m256 a = _mm256_max_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  b = _mm_max_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

// Sums of four f32 vectors: lanes [sum a, sum b, sum c, sum d].
inline __m128 reduce4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 s = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  const __m256 s2 = _mm256_add_ps(_mm512_castps512_ps256(s),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(s2), _mm256_extractf128_ps(s2, 1));
}

// Lane i of the result: the sum of v[i]'s lanes (a transposing tree: 45 operations for the
// sixteen vectors against 52 for four reduce4_epi32 and their stores).
inline __m512i reduce16_epi32(const __m512i* v) {
  __m512i u[8], w[4];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p) {
    u[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * p], v[2 * p + 1]),
                            _mm512_unpackhi_epi32(v[2 * p], v[2 * p + 1]));
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {  // each 128-bit chunk: partial sums of v[4q..4q+3]
    w[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(u[2 * q], u[2 * q + 1]),
                            _mm512_unpackhi_epi64(u[2 * q], u[2 * q + 1]));
  }
  const __m512i x01 = _mm512_add_epi32(_mm512_shuffle_i32x4(w[0], w[1], 0x88),
                                       _mm512_shuffle_i32x4(w[0], w[1], 0xdd));
  const __m512i x23 = _mm512_add_epi32(_mm512_shuffle_i32x4(w[2], w[3], 0x88),
                                       _mm512_shuffle_i32x4(w[2], w[3], 0xdd));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(x01, x23, 0x88),
                          _mm512_shuffle_i32x4(x01, x23, 0xdd));
}

// Sums each of n vectors (n <= 16) into out[0..n).
inline void reduce_all_epi32(const __m512i* v, int n, int32_t* out) {
  const __m512i z = _mm512_setzero_si512();
  for (int i = 0; i < n; i += 4) {
    const __m128i s = reduce4_epi32(v[i], i + 1 < n ? v[i + 1] : z, i + 2 < n ? v[i + 2] : z,
                                    i + 3 < n ? v[i + 3] : z);
    alignas(16) int32_t tmp[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), s);
#pragma GCC unroll 16
    for (int k = 0; k < 4; ++k) {
      if (i + k < n) out[i + k] = tmp[k];
    }
  }
}

// ---- activation quantisation ----

void quantize_row(const float* x, int64_t n, int8_t* q, float* scale, int32_t* sums) {
  // max |x|: vmaxps returns its second operand when the first is NaN, as the scalar
  // `a > m ? a : m` does, so NaNs are skipped the same way.
  __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m0);
    m1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 16)), m1);
  }
  for (; i < n; i += 16) {
    m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask16(n - i), x + i)), m0);
  }
  const float m = hmax_ps(_mm512_max_ps(m0, m1));
  const float s = 127.0f / (m > 1e-5f ? m : 1e-5f);
  *scale = s;

  const __m512 vs = _mm512_set1_ps(s);
  const __m512 lo = _mm512_set1_ps(-128.0f);
  const __m512 hi = _mm512_set1_ps(127.0f);
  __m512i run_sum = _mm512_setzero_si512();
  for (i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask16(n - i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vs);
    v = _mm512_max_ps(v, lo);  // NaN -> -128, like the scalar version
    v = _mm512_min_ps(v, hi);
    const __m512i iv = _mm512_cvtps_epi32(v);  // round half to even (default MXCSR)
    _mm512_mask_cvtsepi32_storeu_epi8(q + i, k, iv);
    run_sum = _mm512_add_epi32(run_sum, iv);
    if ((i + 16) % 128 == 0 || i + 16 >= n) {
      sums[i / 128] = hsum_epi32(run_sum);
      run_sum = _mm512_setzero_si512();
    }
  }
}

// ---- ternary x int8 ----

template <bool kI2S>
inline int64_t run_offset(int64_t k) {
  return kI2S ? 32 * k : 66 * (k >> 1) + 32 * (k & 1);
}

// Per-byte masks: `a` in the low 256 bits, `b` in the high 256 bits.
inline __m512i halves_epi8(char a, char b) {
  return _mm512_inserti64x4(_mm512_set1_epi8(a), _mm256_set1_epi8(b), 1);
}

// The codes of run k are not shifted into place: a run broadcast to both halves of a register
// and masked keeps a field where it lies, so it enters vpdpbusd as c * 4^s for its position
// s. The masks pick weights 0..31 (low half) and 32..63 (high half) of the run, which meet
// activation bytes 0..63 of the run; the same masks after a shift right by 4 pick weights
// 64..127. TQ2_0 keeps group g at bits 2g: masks 0x03 and 0x0c (factors 1 and 4). I2_S keeps
// group g at bits 6 - 2g: after the shift by 4 the masks 0x0c and 0x03 pick groups 0 and 1
// (factors 4 and 1), and unshifted groups 2 and 3. Every lane of an accumulator sums terms of
// one factor, so one exact arithmetic shift per lane (factor_shift) removes it at the end.
template <bool kI2S>
inline __m512i code_mask() {
  return kI2S ? halves_epi8(0x0c, 0x03) : halves_epi8(0x03, 0x0c);
}

template <bool kI2S>
inline __m512i factor_shift() {
  return kI2S ? _mm512_inserti64x4(_mm512_set1_epi32(2), _mm256_set1_epi32(0), 1)
              : _mm512_inserti64x4(_mm512_set1_epi32(0), _mm256_set1_epi32(2), 1);
}

// acc += dot(c, a), in acc's own register: GCC 12 otherwise computes some sums of an unrolled
// tile into a fresh register and copies them back, or spills them (about 25 extra moves a run).
inline __m512i dpbusd_tied(__m512i acc, __m512i c, __m512i a) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(c), "v"(a));
  return acc;
}

// Adds half kHalf of run k (weights 64 kHalf .. 64 kHalf + 63) of R rows and T tokens to
// acc[i * T + j]. TQ2_0 takes the second half from the shifted copy, I2_S the first. The codes
// of one half are built for all rows first (the broadcast is loaded again from L1 for the
// second half) so that a 4 x 4 tile fits the 32 registers.
template <bool kI2S, int R, int T, int kHalf>
inline void ternary_half(__m512i* acc, const uint8_t* const* rows, const int8_t* const* qs,
                         int64_t k, __m512i mask) {
  const int64_t off = run_offset<kI2S>(k);
  constexpr bool shifted = kI2S ? kHalf == 0 : kHalf == 1;
  __m512i c[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    const __m512i w =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + off)));
    c[i] = _mm512_and_si512(shifted ? _mm512_srli_epi16(w, 4) : w, mask);
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    const __m512i a = _mm512_loadu_si512(qs[j] + 128 * k + 64 * kHalf);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) acc[i * T + j] = dpbusd_tied(acc[i * T + j], c[i], a);
  }
}

// Adds sum(c * 4^s * q) of run k of R rows and T tokens to acc[i * T + j].
template <bool kI2S, int R, int T>
inline void ternary_run(__m512i* acc, const uint8_t* const* rows, const int8_t* const* qs,
                        int64_t k, __m512i mask, int64_t prefetch) {
  const int64_t off = run_offset<kI2S>(k);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    prefetch_weights(reinterpret_cast<const char*>(rows[i] + off + prefetch));
  }
  ternary_half<kI2S, R, T, 0>(acc, rows, qs, k, mask);
  ternary_half<kI2S, R, T, 1>(acc, rows, qs, k, mask);
}

// Removes the factors and sums each accumulator: out[i] = sum(c * q) over acc[i].
template <bool kI2S, int N>
inline void finish(__m512i* acc, int32_t* out) {
  const __m512i sh = factor_shift<kI2S>();
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) acc[i] = _mm512_srav_epi32(acc[i], sh);
  reduce_all_epi32(acc, N, out);
}

// TQ1_0 (layout kTq1): the codes of half h of run k (weights 64h..64h + 63 of the run) are
// base-3 digits of the block's bytes: run 2b is digits 0..3 of qs[0..32); run 2b + 1 is digit
// 4 of qs[0..32), digits 0..4 of qs[32..48) (16 weights each) and the four digits of qh[0..4)
// (weight 240 + 4n + m is digit n of qh[m]). Digit n of byte b is ((uint8)(b * 3^n) * 3) >> 8;
// kTq1Mul holds 3^n for each 16-bit lane of the four byte vectors built in ternary_run_tq1.
enum Layout { kTq2 = 0, kI2s = 1, kTq1 = 2 };

alignas(64) constexpr int16_t kTq1Mul[4][32] = {
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
     3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
    {9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,
     27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27},
    {81, 81, 81, 81, 81, 81, 81, 81, 81, 81, 81, 81, 81, 81, 81, 81,
     1,  1,  1,  1,  1,  1,  1,  1,  3,  3,  3,  3,  3,  3,  3,  3},
    {9,  9,  9,  9,  9,  9,  9,  9,  27, 27, 27, 27, 27, 27, 27, 27,
     81, 81, 81, 81, 81, 81, 81, 81, 1,  1,  3,  3,  9,  9,  27, 27}};

// Digit codes of the bytes of v, each 16-bit lane's two bytes at the lane's multiplier m.
inline __m512i tq1_digits(__m512i v, __m512i m) {
  const __m512i three = _mm512_set1_epi16(3);
  const __m512i lo = _mm512_slli_epi16(_mm512_mullo_epi16(v, m), 8);
  const __m512i hi = _mm512_mullo_epi16(_mm512_and_si512(v, _mm512_set1_epi16(int16_t(0xff00))), m);
  return _mm512_or_si512(_mm512_mulhi_epu16(lo, three),
                         _mm512_slli_epi16(_mm512_mulhi_epu16(hi, three), 8));
}

// Adds sum(c * q) of run k of R TQ1_0 rows and T tokens to acc[i * T + j] (codes exact: no
// factors to remove).
template <int R, int T>
inline void ternary_run_tq1(__m512i* acc, const uint8_t* const* rows, const int8_t* const* qs,
                            int64_t k, int64_t prefetch) {
  const int64_t off = 54 * (k >> 1);
  const int odd = int(k & 1);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    prefetch_weights(reinterpret_cast<const char*>(rows[i] + off + prefetch));
  }
#pragma GCC unroll 2
  for (int half = 0; half < 2; ++half) {
    const __m512i m = _mm512_load_si512(kTq1Mul[2 * odd + half]);
    __m512i c[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = rows[i] + off;
      __m512i v;
      if (!odd) {
        v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
      } else {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32));
        if (half == 0) {
          v = _mm512_inserti64x4(
              _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk))),
              _mm256_broadcastsi128_si256(b), 1);
        } else {
          int32_t qh;
          std::memcpy(&qh, blk + 48, 4);
          v = _mm512_inserti32x4(_mm512_broadcast_i32x4(b), _mm_set1_epi32(qh), 3);
        }
      }
      c[i] = tq1_digits(v, m);
    }
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m512i a = _mm512_loadu_si512(qs[j] + 128 * k + 64 * half);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i * T + j] = dpbusd_tied(acc[i * T + j], c[i], a);
    }
  }
}

// y = d * float(dot - total) / scale for a tile, four lanes at a time: vector conversion,
// multiplication and division round each lane exactly as the scalar expression does.
template <int R, int T>
inline void store_uniform(const int32_t* dots, float d, const ActsView& x, float* y,
                          int64_t y_stride, int64_t r, int64_t t) {
  constexpr int kN = (R * T + 3) / 4 * 4;
  alignas(16) int32_t dot[kN], total[kN];
  alignas(16) float scale[kN], out[kN];
#pragma GCC unroll 16
  for (int i = 0; i < kN; ++i) {
    dot[i] = i < R * T ? dots[i] : 0;
    total[i] = i < R * T ? x.total[t + i % T] : 0;
    scale[i] = i < R * T ? x.scale[t + i % T] : 1.0f;
  }
  const __m128 dv = _mm_set1_ps(d);
#pragma GCC unroll 4
  for (int i = 0; i < kN; i += 4) {
    const __m128i s = _mm_sub_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(dot + i)),
                                    _mm_load_si128(reinterpret_cast<const __m128i*>(total + i)));
    _mm_store_ps(out + i, _mm_div_ps(_mm_mul_ps(dv, _mm_cvtepi32_ps(s)), _mm_load_ps(scale + i)));
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) y[(t + j) * y_stride + r + i] = out[i * T + j];
  }
}

// store_uniform for a 4 x 4 tile of TQ2_0 or I2_S sums, in vectors: the factors removed, the
// sixteen sums reduced into one vector's lanes (row-major), taken to token-major order, and
// each token's four rows stored together. The lanes round as store_uniform's do.
template <bool kI2S>
inline void store_uniform_4x4(__m512i* acc, float d, const ActsView& x, float* y, int64_t y_stride,
                              int64_t r, int64_t t) {
  const __m512i sh = factor_shift<kI2S>();
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_srav_epi32(acc[i], sh);
  const __m512i dot = _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), reduce16_epi32(acc));
  const __m512i token = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m512i total = _mm512_permutexvar_epi32(
      token,
      _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.total + t))));
  const __m512 scale =
      _mm512_permutexvar_ps(token, _mm512_castps128_ps512(_mm_loadu_ps(x.scale + t)));
  const __m512 out = _mm512_div_ps(
      _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_sub_epi32(dot, total))), scale);
  _mm_storeu_ps(y + t * y_stride + r, _mm512_castps512_ps128(out));
  _mm_storeu_ps(y + (t + 1) * y_stride + r, _mm512_extractf32x4_ps(out, 1));
  _mm_storeu_ps(y + (t + 2) * y_stride + r, _mm512_extractf32x4_ps(out, 2));
  _mm_storeu_ps(y + (t + 3) * y_stride + r, _mm512_extractf32x4_ps(out, 3));
}

// Rows [r, r + R) and tokens [t, t + T).
template <int kLayout, bool kPerBlock, int R, int T>
void ternary_tile(const TernaryView& w, const ActsView& x, int64_t r, int64_t t, float* y,
                  int64_t y_stride) {
  const int64_t n = w.n_in;
  const int64_t runs = n / 128;
  const uint8_t* rows[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) rows[i] = w.data + (r + i) * w.row_bytes;
  const int8_t* qs[T];
  const int32_t* sums[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) {
    qs[j] = x.q + (t + j) * n;
    sums[j] = x.sums + (t + j) * runs;
  }
  const int64_t pf = prefetch_distance(w.row_bytes);
  __m512i acc[R * T];
  int32_t dots[R * T];
  constexpr bool kI2S = kLayout == kI2s;
  const __m512i mask = code_mask<kI2S>();
  auto run = [&](int64_t k) {
    if constexpr (kLayout == kTq1) {
      ternary_run_tq1<R, T>(acc, rows, qs, k, pf);
    } else {
      ternary_run<kI2S, R, T>(acc, rows, qs, k, mask, pf);
    }
  };
  auto sum_up = [&] {
    if constexpr (kLayout == kTq1) {
      reduce_all_epi32(acc, R * T, dots);
    } else {
      finish<kI2S, R * T>(acc, dots);
    }
  };

  if constexpr (!kPerBlock) {
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_si512();
    for (int64_t k = 0; k < runs; ++k) run(k);
    if constexpr (R == 4 && T == 4 && kLayout != kTq1) {
      store_uniform_4x4<kI2S>(acc, w.d, x, y, y_stride, r, t);
    } else {
      sum_up();
      store_uniform<R, T>(dots, w.d, x, y, y_stride, r, t);
    }
  } else {  // TQ1_0 or TQ2_0, one fp16 d per block of 256 (two runs), summed in block order
    float accf[R * T];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) accf[i] = 0.0f;
    for (int64_t b = 0; b < runs / 2; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_si512();
      run(2 * b);
      run(2 * b + 1);
      sum_up();
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const float d =
            kLayout == kTq1 ? half_at(rows[i] + 54 * b + 52) : half_at(rows[i] + 66 * b + 64);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const int32_t dot = dots[i * T + j] - (sums[j][2 * b] + sums[j][2 * b + 1]);
          accf[i * T + j] += product(d, float(dot));
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) y[(t + j) * y_stride + r + i] = accf[i * T + j] / x.scale[t + j];
    }
  }
}

using TernaryTileFn = void (*)(const TernaryView&, const ActsView&, int64_t, int64_t, float*,
                               int64_t);

template <int kLayout, bool kPerBlock, int R>
TernaryTileFn ternary_tile_for(int T) {
  switch (T) {
    case 1:
      return ternary_tile<kLayout, kPerBlock, R, 1>;
    case 2:
      return ternary_tile<kLayout, kPerBlock, R, 2>;
    case 3:
      return ternary_tile<kLayout, kPerBlock, R, 3>;
    default:
      return ternary_tile<kLayout, kPerBlock, R, 4>;
  }
}

// ---- TQ1_0 digits looked up (AVX-512 VBMI) ----
//
// A TQ1_0 byte's digits looked up instead of computed (tq1_digits' four 16-bit multiplies a 64
// codes): table `low` maps a byte to its digits 0..3 as 2-bit fields (digit n at bits 2n),
// `fifth` to its digit 4. vpermi2b looks up 128 entries; the byte's bit 7 picks one of two
// such lookups. A block's 52 bytes give five code vectors, digit n of byte m in lane m (bytes
// 52..63 read as 0, whose digits are 0), which meet the block's activations rearranged once a
// call into the same order (tq1_digit_major): lane m of vector n holds the activation of the
// weight that digit n of byte m codes (FORMATS.md), zero where no weight is (lanes 52..63,
// and 48..51 of vector 4: qh bytes hold four digits). The integer sums are the same.

constexpr uint8_t tq1_code(int b, int n) {  // FORMATS.md's trit n of byte b, as a code 0..2
  int p = 1;
  for (int i = 0; i < n; ++i) p *= 3;
  return uint8_t(((b * p) & 0xff) * 3 >> 8);
}

struct Tq1Tables {
  alignas(64) uint8_t low[256] = {};
  alignas(64) uint8_t fifth[256] = {};
};

constexpr Tq1Tables make_tq1_tables() {
  Tq1Tables t;
  for (int b = 0; b < 256; ++b) {
    t.low[b] =
        uint8_t(tq1_code(b, 0) | tq1_code(b, 1) << 2 | tq1_code(b, 2) << 4 | tq1_code(b, 3) << 6);
    t.fifth[b] = tq1_code(b, 4);
  }
  return t;
}

alignas(64) constexpr Tq1Tables kTq1Tables = make_tq1_tables();
constexpr int64_t kTq1MajorBytes = 320;  // a block's activations in digit order: five vectors

// The activations q (n values) in digit order, a block's five vectors after another.
void tq1_digit_major(const int8_t* q, int64_t n, int8_t* out) {
  for (int64_t b = 0; b < n / 256; ++b) {
    const int8_t* s = q + 256 * b;
    int8_t* o = out + kTq1MajorBytes * b;
    std::memset(o, 0, kTq1MajorBytes);
    for (int d = 0; d < 5; ++d) {
      std::memcpy(o + 64 * d, s + 32 * d, 32);
      std::memcpy(o + 64 * d + 32, s + 160 + 16 * d, 16);
      if (d < 4) std::memcpy(o + 64 * d + 48, s + 240 + 4 * d, 4);
    }
  }
}

#define TRIT_VBMI __attribute__((target("avx512vbmi")))

struct Tq1Lut {
  __m512i low[4], fifth[4];
};

TRIT_VBMI inline Tq1Lut tq1_lut() {
  Tq1Lut t;
  for (int i = 0; i < 4; ++i) {
    t.low[i] = _mm512_load_si512(kTq1Tables.low + 64 * i);
    t.fifth[i] = _mm512_load_si512(kTq1Tables.fifth + 64 * i);
  }
  return t;
}

// The five code vectors of the TQ1_0 block at blk.
TRIT_VBMI inline __attribute__((always_inline)) void tq1_block_codes(const uint8_t* blk,
                                                                     const Tq1Lut& t, __m512i* c) {
  const __m512i v = _mm512_maskz_loadu_epi8(__mmask64((1ull << 52) - 1), blk);
  const __mmask64 high = _mm512_movepi8_mask(v);
  const __m512i low = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(t.low[0], v, t.low[1]),
                                             _mm512_permutex2var_epi8(t.low[2], v, t.low[3]));
  c[4] = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(t.fifth[0], v, t.fifth[1]),
                                _mm512_permutex2var_epi8(t.fifth[2], v, t.fifth[3]));
  const __m512i m3 = _mm512_set1_epi8(3);
  c[0] = _mm512_and_si512(low, m3);
  c[1] = _mm512_and_si512(_mm512_srli_epi16(low, 2), m3);
  c[2] = _mm512_and_si512(_mm512_srli_epi16(low, 4), m3);
  c[3] = _mm512_and_si512(_mm512_srli_epi16(low, 6), m3);
}

// Adds block b of R rows against T tokens' activations in digit order to acc[i * T + j].
template <int R, int T>
TRIT_VBMI inline __attribute__((always_inline)) void tq1_lut_block(__m512i* acc,
                                                                   const uint8_t* const* rows,
                                                                   const int8_t* major,
                                                                   int64_t blocks, int64_t b,
                                                                   int64_t pf, const Tq1Lut& lut) {
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    prefetch_weights(reinterpret_cast<const char*>(rows[i] + 54 * b + pf));
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    __m512i c[5];
    tq1_block_codes(rows[i] + 54 * b, lut, c);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const int8_t* a = major + (j * blocks + b) * kTq1MajorBytes;
#pragma GCC unroll 5
      for (int d = 0; d < 5; ++d) {
        acc[i * T + j] = dpbusd_tied(acc[i * T + j], c[d], _mm512_load_si512(a + 64 * d));
      }
    }
  }
}

// ternary_tile for TQ1_0 with the digits looked up: rows [r, r + R), tokens [t, t + T), whose
// activations in digit order are at major, a token's after another.
template <bool kPerBlock, int R, int T>
TRIT_VBMI void tq1_lut_tile(const TernaryView& w, const ActsView& x, const int8_t* major, int64_t r,
                            int64_t t, float* y, int64_t y_stride) {
  const int64_t blocks = w.n_in / 256;
  const uint8_t* rows[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) rows[i] = w.data + (r + i) * w.row_bytes;
  const int64_t pf = prefetch_distance(w.row_bytes);
  const Tq1Lut lut = tq1_lut();
  __m512i acc[R * T];
  int32_t dots[R * T];
  if constexpr (!kPerBlock) {
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_si512();
    for (int64_t b = 0; b < blocks; ++b) tq1_lut_block<R, T>(acc, rows, major, blocks, b, pf, lut);
    reduce_all_epi32(acc, R * T, dots);
    store_uniform<R, T>(dots, w.d, x, y, y_stride, r, t);
  } else {  // one fp16 d per block, summed in block order (ternary_tile's expression)
    const int64_t runs = w.n_in / 128;
    float accf[R * T];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) accf[i] = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_si512();
      tq1_lut_block<R, T>(acc, rows, major, blocks, b, pf, lut);
      reduce_all_epi32(acc, R * T, dots);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const float d = half_at(rows[i] + 54 * b + 52);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const int32_t* sums = x.sums + (t + j) * runs;
          const int32_t dot = dots[i * T + j] - (sums[2 * b] + sums[2 * b + 1]);
          accf[i * T + j] += product(d, float(dot));
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) y[(t + j) * y_stride + r + i] = accf[i * T + j] / x.scale[t + j];
    }
  }
}

using Tq1LutTileFn = void (*)(const TernaryView&, const ActsView&, const int8_t*, int64_t, int64_t,
                              float*, int64_t);

template <bool kPerBlock, int R>
Tq1LutTileFn tq1_lut_tile_for(int T) {
  switch (T) {
    case 1:
      return tq1_lut_tile<kPerBlock, R, 1>;
    case 2:
      return tq1_lut_tile<kPerBlock, R, 2>;
    case 3:
      return tq1_lut_tile<kPerBlock, R, 3>;
    default:
      return tq1_lut_tile<kPerBlock, R, 4>;
  }
}

// Rows [r0, r1) of TQ1_0 for up to kTokens tokens with the digits looked up.
template <bool kPerBlock>
void tq1_lut_rows(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride, int64_t r0,
                  int64_t r1) {
  constexpr int kRows = 4;
  const int64_t nt = x.n_tokens, per_token = w.n_in / 256 * kTq1MajorBytes;
  int8_t* major = reinterpret_cast<int8_t*>(ternary_scratch(nt * per_token));
  for (int64_t t = 0; t < nt; ++t) tq1_digit_major(x.q + t * w.n_in, w.n_in, major + t * per_token);
  const int T = int(nt);
  int64_t r = r0;
  // One token: eight rows a tile (bench/kernels_bench, 2560 x 6912 on AMD Zen 5: 7% faster than
  // four; two tokens gain nothing).
  if (nt == 1) {
    for (; r + 8 <= r1; r += 8) tq1_lut_tile_for<kPerBlock, 8>(T)(w, x, major, r, 0, y, y_stride);
  }
  for (; r + kRows <= r1; r += kRows) {
    tq1_lut_tile_for<kPerBlock, kRows>(T)(w, x, major, r, 0, y, y_stride);
  }
  for (; r < r1; ++r) tq1_lut_tile_for<kPerBlock, 1>(T)(w, x, major, r, 0, y, y_stride);
}

template <int kLayout, bool kPerBlock>
void ternary_rows(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride, int64_t r0,
                  int64_t r1) {
  constexpr int kRows = 4, kTokens = 4;
  const int64_t nt = x.n_tokens;
  if constexpr (kLayout == kTq1) {
    if (nt <= kTokens && tq1_tables_enabled())
      return tq1_lut_rows<kPerBlock>(w, x, y, y_stride, r0, r1);
    if (nt > kTokens) {  // more than one token tile: decode each block of rows once, as TQ2_0
      TernaryView t2 = w;
      t2.type = DType::TQ2_0;
      t2.row_bytes = w.n_in / 256 * 66;
      const int64_t block = block_rows(t2.row_bytes, kRows);
      uint8_t* buf = ternary_scratch(block * t2.row_bytes);
      t2.data = buf;
      for (int64_t r = r0; r < r1; r += block) {
        const int64_t rows = std::min(block, r1 - r);
        tq1_to_tq2_rows_avx2(w.data + r * w.row_bytes, w.row_bytes, w.n_in, int(rows), buf,
                             t2.row_bytes);
        for (int64_t t = 0; t < nt; t += kTokens) {
          const int T = int(nt - t < kTokens ? nt - t : kTokens);
          int64_t i = 0;
          for (; i + kRows <= rows; i += kRows) {
            ternary_tile_for<kTq2, kPerBlock, kRows>(T)(t2, x, i, t, y + r, y_stride);
          }
          for (; i < rows; ++i)
            ternary_tile_for<kTq2, kPerBlock, 1>(T)(t2, x, i, t, y + r, y_stride);
        }
      }
      return;
    }
  }
  int64_t r = r0;
  // One or two tokens: eight rows a tile, whose codes and sums still fit the registers, so the
  // per-tile work (reductions, stores, the loop's start) is spread over twice the weights
  // (bench/kernels_bench, 2560 x 6912, one token: 12-20% faster than four rows). Not TQ1_0,
  // whose digit extraction needs registers of its own (its decoding 4-6% slower with eight).
  if (kLayout != kTq1 && nt <= 2) {
    for (; r + 8 <= r1; r += 8) {
      if (nt == 1) {
        ternary_tile<kLayout, kPerBlock, 8, 1>(w, x, r, 0, y, y_stride);
      } else {
        ternary_tile<kLayout, kPerBlock, 8, 2>(w, x, r, 0, y, y_stride);
      }
    }
  }
  const int64_t block = block_rows(w.row_bytes, kRows);
  while (r + kRows <= r1) {
    const int64_t end = r + std::min(block, (r1 - r) / kRows * kRows);
    for (int64_t t = 0; t < nt; t += kTokens) {
      const int T = int(nt - t < kTokens ? nt - t : kTokens);
      for (int64_t rb = r; rb < end; rb += kRows) {
        ternary_tile_for<kLayout, kPerBlock, kRows>(T)(w, x, rb, t, y, y_stride);
      }
    }
    r = end;
  }
  for (; r < r1; ++r) {
    for (int64_t t = 0; t < nt; t += kTokens) {
      const int T = int(nt - t < kTokens ? nt - t : kTokens);
      ternary_tile_for<kLayout, kPerBlock, 1>(T)(w, x, r, t, y, y_stride);
    }
  }
}

// ---- float weights x f32 ----

// Q6_K: the 16 sub-block multipliers d * scales[i] of a block.
inline void q6k_scales(const uint8_t* blk, float* ds) {
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
  _mm512_store_ps(ds, _mm512_mul_ps(_mm512_set1_ps(half_at(blk + 208)),
                                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc))));
}

// Q6_K: the int8 weights (q - 32) 128h + 0..63 in v[0] and 128h + 64..127 in v[1]. ql bytes
// 64h + r hold weight r's low nibble and weight r + 64's high nibble; qh byte 32h + m holds the
// top two bits of weights m, m + 32, m + 64, m + 96 at shifts 0, 2, 4, 6.
inline void q6k_half(const uint8_t* blk, int h, __m512i* v) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i m30 = _mm512_set1_epi8(0x30);
  const __m512i m32 = _mm512_set1_epi8(32);
  const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
  const __m512i qh = _mm512_broadcast_i64x4(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h)));
  // 16-bit lane shifts move bits across bytes; the masks drop them.
  const __m512i lo0 = _mm512_and_si512(ql, m4);
  const __m512i lo1 = _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4);
  // Immediate shifts with a merge mask for the high half: variable word shifts (vpsllvw)
  // are slow on some processors.
  const __mmask32 high = 0xffff0000u;
  const __m512i hi0 =
      _mm512_and_si512(_mm512_mask_slli_epi16(_mm512_slli_epi16(qh, 4), high, qh, 2), m30);
  const __m512i hi1 = _mm512_and_si512(_mm512_mask_srli_epi16(qh, high, qh, 2), m30);
  v[0] = _mm512_sub_epi8(_mm512_or_si512(lo0, hi0), m32);
  v[1] = _mm512_sub_epi8(_mm512_or_si512(lo1, hi1), m32);
}

// a * *s, the scalar broadcast from memory as the multiply's operand: the compiler would
// otherwise load a vector of scales once and permute one out for each product.
inline __m512 mul_broadcast(__m512 a, const float* s) {
  __m512 r;
  __asm__("vmulps %2%{1to16%}, %1, %0" : "=v"(r) : "v"(a), "m"(*s));
  return r;
}

// Weights 16c..16c+15 of v (c in 0..3) as f32 times ds.
inline __m512 q6k_chunk(__m512i v, int c, float ds) {
  __m128i q8;
  switch (c) {  // the lane index must be an immediate
    case 0:
      q8 = _mm512_castsi512_si128(v);
      break;
    case 1:
      q8 = _mm512_extracti32x4_epi32(v, 1);
      break;
    case 2:
      q8 = _mm512_extracti32x4_epi32(v, 2);
      break;
    default:
      q8 = _mm512_extracti32x4_epi32(v, 3);
      break;
  }
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8)), _mm512_set1_ps(ds));
}

// 16 weights starting at k (a multiple of 16) of a row, as f32. `mask` covers a short tail
// (f32, f16 and bf16 rows may end anywhere; q8_0 rows are whole blocks of 32).
template <DType kType>
inline __m512 load16(const uint8_t* row, int64_t k, __mmask16 mask) {
  if constexpr (kType == DType::F32) {
    return _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(row) + k);
  } else if constexpr (kType == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row + 2 * k));
  } else if constexpr (kType == DType::BF16) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row + 2 * k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
  } else {  // Q8_0
    const uint8_t* blk = row + (k / 32) * 34;
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 + (k % 32)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(half_at(blk)));
  }
}

// The sums of acc[i * T + j] to y[(t + j) * y_stride + r + i].
template <int R, int T>
inline void store_sums(const __m512* acc, float* y, int64_t y_stride, int64_t r, int64_t t) {
  const __m512 z = _mm512_setzero_ps();
  alignas(16) float s[R * T + 3];
#pragma GCC unroll 16
  for (int i = 0; i < R * T; i += 4) {
    _mm_storeu_ps(s + i,
                  reduce4_ps(acc[i], i + 1 < R * T ? acc[i + 1] : z, i + 2 < R * T ? acc[i + 2] : z,
                             i + 3 < R * T ? acc[i + 3] : z));
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) y[(t + j) * y_stride + r + i] = s[i * T + j];
  }
}

// Weights decoded in registers: rows [r, r + R), tokens [t, t + T).
template <DType kType, int R, int T>
void float_tile_fused(const FloatView& w, const float* x, float* y, int64_t y_stride, int64_t r,
                      int64_t t) {
  const int64_t n = w.n_in;
  const uint8_t* rows[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) rows[i] = w.data + (r + i) * w.row_bytes;
  const float* xs[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) xs[j] = x + (t + j) * n;
  __m512 acc[R * T];
#pragma GCC unroll 16
  for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_ps();

  const int64_t pf = prefetch_distance(w.row_bytes);
  if constexpr (kType == DType::Q6_K) {
    alignas(64) float ds[R][16];
    for (int64_t b = 0; b < n / 256; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const char* next = reinterpret_cast<const char*>(rows[i] + b * 210 + pf);
        for (int line = 0; line < 4; ++line) prefetch_weights(next + 64 * line);
        q6k_scales(rows[i] + b * 210, ds[i]);
      }
#pragma GCC unroll 16
      for (int h = 0; h < 2; ++h) {
        // The half's int8 weights through memory, and each 16's scale broadcast from ds as the
        // multiply's operand: the compiler kept ds in registers and took a permute a product
        // to pick a scale out (kernels_bench q6_k 2560 x 1024, one token, AMD Zen 5: 17 -> 20
        // GB/s a core).
        alignas(64) int8_t q8[R][128];
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          __m512i v[2];
          q6k_half(rows[i] + b * 210, h, v);
          _mm512_store_si512(q8[i], v[0]);
          _mm512_store_si512(q8[i] + 64, v[1]);
        }
#pragma GCC unroll 16
        for (int c = 0; c < 8; ++c) {
          const int64_t k = b * 256 + h * 128 + c * 16;
          __m512 wf[R];
#pragma GCC unroll 16
          for (int i = 0; i < R; ++i) {
            const __m128i q = _mm_load_si128(reinterpret_cast<const __m128i*>(q8[i] + 16 * c));
            wf[i] = mul_broadcast(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), &ds[i][8 * h + c]);
          }
#pragma GCC unroll 16
          for (int j = 0; j < T; ++j) {
            const __m512 xv = _mm512_loadu_ps(xs[j] + k);
#pragma GCC unroll 16
            for (int i = 0; i < R; ++i) acc[i * T + j] = _mm512_fmadd_ps(wf[i], xv, acc[i * T + j]);
          }
        }
      }
    }
  } else if constexpr (kType == DType::Q8_0) {
    for (int64_t b = 0; b < n / 32; ++b) {
      __m512 w0[R], w1[R];
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const uint8_t* blk = rows[i] + b * 34;
        prefetch_weights(reinterpret_cast<const char*>(blk + pf));
        const __m512 d = _mm512_set1_ps(half_at(blk));
        const __m128i* q = reinterpret_cast<const __m128i*>(blk + 2);
        w0[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d);
        w1[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))), d);
      }
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const __m512 x0 = _mm512_loadu_ps(xs[j] + b * 32);
        const __m512 x1 = _mm512_loadu_ps(xs[j] + b * 32 + 16);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          acc[i * T + j] = _mm512_fmadd_ps(w0[i], x0, acc[i * T + j]);
          acc[i * T + j] = _mm512_fmadd_ps(w1[i], x1, acc[i * T + j]);
        }
      }
    }
  } else {
    constexpr int64_t kStep = kType == DType::F32 ? 64 : 32;  // bytes per 16 weights
    for (int64_t k = 0; k < n; k += 16) {
      const __mmask16 mask = tail_mask16(n - k);
      __m512 wf[R];
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        // One prefetch a 64-byte line: f16 and bf16 rows take two steps a line.
        if (kStep == 64 || (k & 31) == 0) prefetch_weights(rows[i] + (k / 16) * kStep + pf);
        wf[i] = load16<kType>(rows[i], k, mask);
      }
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const __m512 xv = _mm512_maskz_loadu_ps(mask, xs[j] + k);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) acc[i * T + j] = _mm512_fmadd_ps(wf[i], xv, acc[i * T + j]);
      }
    }
  }
  store_sums<R, T>(acc, y, y_stride, r, t);
}

// f32 rows (already decoded) x tokens [t, t + T); writes rows [r, r + R). ahead (R rows of
// row_bytes, or nullptr): the encoded rows decoded next, prefetched at the same pace, so that
// the memory streams them while this tile computes.
template <int R, int T>
void float_tile_f32(const float* const* wr, int64_t n, const float* x, float* y, int64_t y_stride,
                    int64_t r, int64_t t, const uint8_t* const* ahead = nullptr,
                    int64_t row_bytes = 0) {
  const float* xs[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) xs[j] = x + (t + j) * n;
  __m512 acc[R * T];
#pragma GCC unroll 16
  for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 16) {
    if (ahead) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) prefetch_weights(ahead[i] + k * row_bytes / n);
    }
    const __mmask16 mask = tail_mask16(n - k);
    __m512 wf[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wf[i] = _mm512_maskz_loadu_ps(mask, wr[i] + k);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, xs[j] + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i * T + j] = _mm512_fmadd_ps(wf[i], xv, acc[i * T + j]);
    }
  }
  store_sums<R, T>(acc, y, y_stride, r, t);
}

template <DType kType>
void decode_row(const uint8_t* row, int64_t n, float* out) {
  if constexpr (kType == DType::Q6_K) {
    alignas(64) float ds[16];
    for (int64_t b = 0; b < n / 256; ++b) {
      q6k_scales(row + b * 210, ds);
#pragma GCC unroll 16
      for (int h = 0; h < 2; ++h) {
        __m512i v[2];
        q6k_half(row + b * 210, h, v);
#pragma GCC unroll 16
        for (int c = 0; c < 8; ++c) {
          _mm512_storeu_ps(out + b * 256 + h * 128 + c * 16,
                           q6k_chunk(v[c / 4], c % 4, ds[8 * h + c]));
        }
      }
    }
  } else {
    for (int64_t k = 0; k < n; k += 16) {
      const __mmask16 mask = tail_mask16(n - k);
      _mm512_mask_storeu_ps(out + k, mask, load16<kType>(row, k, mask));
    }
  }
}

template <DType kType, int R>
void float_fused_for(int T, const FloatView& w, const float* x, float* y, int64_t y_stride,
                     int64_t r, int64_t t) {
  switch (T) {
    case 1:
      float_tile_fused<kType, R, 1>(w, x, y, y_stride, r, t);
      return;
    case 2:
      float_tile_fused<kType, R, 2>(w, x, y, y_stride, r, t);
      return;
    default:
      float_tile_fused<kType, R, 3>(w, x, y, y_stride, r, t);
      return;
  }
}

template <int R>
void float_f32_for(int T, const float* const* wr, int64_t n, const float* x, float* y,
                   int64_t y_stride, int64_t r, int64_t t, const uint8_t* const* ahead = nullptr,
                   int64_t row_bytes = 0) {
  switch (T) {
    case 1:
      float_tile_f32<R, 1>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
      return;
    case 2:
      float_tile_f32<R, 2>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
      return;
    case 3:
      float_tile_f32<R, 3>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
      return;
    default:
      float_tile_f32<R, 4>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
      return;
  }
}

template <DType kType>
void float_rows(const FloatView& w, const float* x, int64_t nt, float* y, int64_t y_stride,
                int64_t r0, int64_t r1) {
  const int64_t n = w.n_in;
  if (nt < 4) {  // decode: weights streamed once, decoded in registers
    const int T = int(nt);
    int64_t r = r0;
    if constexpr (kType == DType::Q8_0 || kType == DType::Q6_K) {
      // More work per weight: each activation load serves four rows.
      for (; r + 4 <= r1; r += 4) float_fused_for<kType, 4>(T, w, x, y, y_stride, r, 0);
      for (; r < r1; ++r) float_fused_for<kType, 1>(T, w, x, y, y_stride, r, 0);
    } else {
      // Eight rows a tile for one or two tokens (four for three: the registers), each line
      // prefetched once (bench/kernels_bench, f16 2560 x 128256, one token, 2 threads, AMD
      // Zen 5: two rows a tile with a prefetch every 32 bytes 44 GB/s, this 53-56 GB/s).
      for (; T <= 2 && r + 8 <= r1; r += 8) {  // (no tile of eight rows for three tokens)
        if (T == 1) {
          float_tile_fused<kType, 8, 1>(w, x, y, y_stride, r, 0);
        } else {
          float_tile_fused<kType, 8, 2>(w, x, y, y_stride, r, 0);
        }
      }
      for (; r + 4 <= r1; r += 4) float_fused_for<kType, 4>(T, w, x, y, y_stride, r, 0);
      for (; r < r1; ++r) float_fused_for<kType, 1>(T, w, x, y, y_stride, r, 0);
    }
    return;
  }
  // Batch: decode a panel of six rows once, then run every group of four tokens over it in
  // 6 x 4 tiles (24 sums, six weight vectors and one activation vector: each activation load
  // serves six rows; kernels_bench f16 2048 x 32000 on AMD Zen 5, 32 tokens: 4 x 4 tiles
  // 32.4-33.1 ms, these 30.5-30.8).
  constexpr int kPanel = 6;
  float* scratch = kType == DType::F32 ? nullptr : float_scratch(kPanel * ((n + 15) / 16 * 16));
  for (int64_t r = r0; r < r1; r += kPanel) {
    const int R = int(r1 - r < kPanel ? r1 - r : kPanel);
    const float* wr[kPanel];
    for (int i = 0; i < R; ++i) {
      const uint8_t* row = w.data + (r + i) * w.row_bytes;
      if constexpr (kType == DType::F32) {
        wr[i] = reinterpret_cast<const float*>(row);
      } else {
        float* dst = scratch + i * ((n + 15) / 16 * 16);
        decode_row<kType>(row, n, dst);
        wr[i] = dst;
      }
    }
    // The next panel's rows stream in while the first group of tokens computes on this one.
    const bool next = kType != DType::F32 && r + 2 * kPanel <= r1;
    const uint8_t* ahead[kPanel] = {};
    for (int i = 0; next && i < kPanel; ++i) ahead[i] = w.data + (r + kPanel + i) * w.row_bytes;
    for (int64_t t = 0; t < nt; t += 4) {
      const int T = int(nt - t < 4 ? nt - t : 4);
      if (R == kPanel) {
        float_f32_for<kPanel>(T, wr, n, x, y, y_stride, r, t, next && t == 0 ? ahead : nullptr,
                              w.row_bytes);
      } else {
        int i = 0;
        if (R >= 4) {
          float_f32_for<4>(T, wr, n, x, y, y_stride, r, t);
          i = 4;
        }
        for (; i < R; ++i) float_f32_for<1>(T, wr + i, n, x, y, y_stride, r + i, t);
      }
    }
  }
}

}  // namespace

void quantize_acts_avx512(const float* x, int64_t n_tokens, int64_t n, ActsOut out) {
  const int64_t runs = (n + 127) / 128;
  for (int64_t t = 0; t < n_tokens; ++t) {
    quantize_row(x + t * n, n, out.q + t * n, out.scale + t, out.sums + t * runs);
  }
}

void ternary_matmul_avx512(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride,
                           int64_t r0, int64_t r1) {
  if (w.type == DType::I2_S) {
    ternary_rows<kI2s, false>(w, x, y, y_stride, r0, r1);
  } else if (w.type == DType::TQ1_0) {
    if (w.uniform) {
      ternary_rows<kTq1, false>(w, x, y, y_stride, r0, r1);
    } else {
      ternary_rows<kTq1, true>(w, x, y, y_stride, r0, r1);
    }
  } else if (w.uniform) {
    ternary_rows<kTq2, false>(w, x, y, y_stride, r0, r1);
  } else {
    ternary_rows<kTq2, true>(w, x, y, y_stride, r0, r1);
  }
}

void float_matmul_avx512(const FloatView& w, const float* x, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t r0, int64_t r1) {
  switch (w.type) {
    case DType::F32:
      float_rows<DType::F32>(w, x, n_tokens, y, y_stride, r0, r1);
      return;
    case DType::F16:
      float_rows<DType::F16>(w, x, n_tokens, y, y_stride, r0, r1);
      return;
    case DType::BF16:
      float_rows<DType::BF16>(w, x, n_tokens, y, y_stride, r0, r1);
      return;
    case DType::Q8_0:
      float_rows<DType::Q8_0>(w, x, n_tokens, y, y_stride, r0, r1);
      return;
    case DType::Q6_K:
      float_rows<DType::Q6_K>(w, x, n_tokens, y, y_stride, r0, r1);
      return;
    default:
      return;  // rejected by the dispatcher
  }
}

}  // namespace trit::engine::cpu

#endif
