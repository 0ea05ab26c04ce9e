// AVX2 (+ FMA, F16C) versions of the CPU kernels. Compiled with -mavx2 -mfma -mf16c and
// entered only when detect_cpu_level() reports at least Avx2.
//
// Ternary x int8 (TQ2_0 and I2_S): a 32-byte run holds 128 weights whose 2-bit fields at one
// shift are 32 consecutive weights (TQ2_0 group g at shift 2g, I2_S at 6 - 2g). Shift, mask to
// the code c in {0, 1, 2} and vpmaddubsw it (unsigned) with 32 int8 activations (signed); the
// int16 pair sums (|c * q| * 2 <= 512) are added over the four groups of a run (<= 2048) and
// widened once per run with vpmaddwd; where the processor has AVX-VNNI, one vpdpbusd adds each
// group's products into int32 sums instead (dpbusd_vex). sum(trit * q) = sum(c * q) - sum(q),
// with sum(q) from the quantised activations. The integer results are exact and the float epilogue
// is the scalar expression, so the output equals the scalar kernel bit for bit.
//
// Float weights x f32: decoded in registers for one to three tokens; for four and more, each
// tile of rows is decoded once to f32 scratch and reused by every group of four tokens.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include <cstring>

#include "backend/cpu/kernels_impl.h"

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

inline int32_t hsum_epi32(__m256i v) {
  __m128i b = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  b = _mm_add_epi32(b, _mm_shuffle_epi32(b, 0x4e));
  b = _mm_add_epi32(b, _mm_shuffle_epi32(b, 0xb1));
  return _mm_cvtsi128_si32(b);
}

// Sums of four int32 vectors: lanes [sum a, sum b, sum c, sum d].
inline __m128i reduce4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

inline void reduce_all_epi32(const __m256i* v, int n, int32_t* out) {
  const __m256i z = _mm256_setzero_si256();
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

inline __m128 reduce4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// ---- activation quantisation ----

// One value exactly as the scalar reference computes it (cvtss2si rounds half to even).
inline int8_t quantize_one(float x, float s) {
  float v = x * s;
  v = v > -128.0f ? v : -128.0f;
  v = v < 127.0f ? v : 127.0f;
  return static_cast<int8_t>(_mm_cvtss_si32(_mm_set_ss(v)));
}

void quantize_row(const float* x, int64_t n, int8_t* q, float* scale, int32_t* sums) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  // vmaxps returns its second operand when the first is NaN, like `a > m ? a : m`.
  __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), m0);
    m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 8), abs_mask), m1);
  }
  m0 = _mm256_max_ps(m0, m1);
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float m = _mm_cvtss_f32(m4);
  for (; i < n; ++i) {
    const float a = x[i] < 0 ? -x[i] : x[i];
    m = a > m ? a : m;
  }
  const float s = 127.0f / (m > 1e-5f ? m : 1e-5f);
  *scale = s;

  const __m256 vs = _mm256_set1_ps(s);
  const __m256 lo = _mm256_set1_ps(-128.0f);
  const __m256 hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto quant8 = [&](const float* p) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(p), vs);
    v = _mm256_max_ps(v, lo);  // NaN -> -128, like the scalar version
    v = _mm256_min_ps(v, hi);
    return _mm256_cvtps_epi32(v);  // round half to even (default MXCSR)
  };
  __m256i run_sum = _mm256_setzero_si256();
  int32_t tail_sum = 0;
  for (i = 0; i < n; i += 32) {
    if (i + 32 <= n) {
      const __m256i a = quant8(x + i), b = quant8(x + i + 8);
      const __m256i c = quant8(x + i + 16), d = quant8(x + i + 24);
      run_sum = _mm256_add_epi32(run_sum,
                                 _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)));
      const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(p, order));
    } else {
      for (int64_t k = i; k < n; ++k) {
        q[k] = quantize_one(x[k], s);
        tail_sum += q[k];
      }
    }
    if ((i + 32) % 128 == 0 || i + 32 >= n) {
      sums[i / 128] = hsum_epi32(run_sum) + tail_sum;
      run_sum = _mm256_setzero_si256();
      tail_sum = 0;
    }
  }
}

// ---- ternary x int8 ----

// Row layouts of the ternary kernels.
enum Layout { kTq2 = 0, kI2s = 1, kTq1 = 2 };

template <int kLayout>
inline int64_t run_offset(int64_t k) {
  if constexpr (kLayout == kI2s) return 32 * k;
  if constexpr (kLayout == kTq1) return 54 * (k >> 1);  // runs 2b and 2b + 1 share block b
  return 66 * (k >> 1) + 32 * (k & 1);
}

// Base-3 digits of TQ1_0 bytes: both bytes of each 16-bit lane at the lane's multiplier m
// (3^n for digit n): ((uint8)(b * 3^n) * 3) >> 8.
inline __m256i tq1_digits(__m256i v, __m256i m) {
  const __m256i three = _mm256_set1_epi16(3);
  const __m256i lo = _mm256_slli_epi16(_mm256_mullo_epi16(v, m), 8);
  const __m256i hi = _mm256_mullo_epi16(_mm256_and_si256(v, _mm256_set1_epi16(int16_t(0xff00))), m);
  return _mm256_or_si256(_mm256_mulhi_epu16(lo, three),
                         _mm256_slli_epi16(_mm256_mulhi_epu16(hi, three), 8));
}

inline __m256i pow3_halves(int a, int b) {
  return _mm256_set_m128i(_mm_set1_epi16(int16_t(b)), _mm_set1_epi16(int16_t(a)));
}

// The codes of group g (weights 32g..32g + 31) of run k of a TQ1_0 row. Run 2b is digits 0..3
// of qs[0..32); run 2b + 1 is digit 4 of qs[0..32), then digits 0..4 of qs[32..48) two at a
// time (16 weights each), then the four digits of qh[0..4) (weights 240 + 4n + m).
inline __m256i tq1_group(const uint8_t* blk, int64_t k, int g) {
  static const int kPow3[5] = {1, 3, 9, 27, 81};
  if ((k & 1) == 0 || g == 0) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
    const __m256i p = _mm256_set1_epi16(int16_t(kPow3[(k & 1) ? 4 : g]));
    return tq1_digits(v, p);
  }
  const __m128i b16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32));
  if (g < 3) {
    const __m256i p = pow3_halves(kPow3[2 * g - 2], kPow3[2 * g - 1]);
    return tq1_digits(_mm256_set_m128i(b16, b16), p);
  }
  int32_t qh;
  std::memcpy(&qh, blk + 48, 4);
  const __m256i v = _mm256_set_m128i(_mm_set1_epi32(qh), b16);
  // Lane l of the high half holds bytes 2l, 2l + 1 of qh repeated: digit l / 2.
  const __m256i p = _mm256_set_epi16(27, 27, 9, 9, 3, 3, 1, 1, 81, 81, 81, 81, 81, 81, 81, 81);
  return tq1_digits(v, p);
}

// acc + the four-byte dot products of u (unsigned) and s (signed) in each int32 lane: AVX-VNNI's
// VEX-encoded vpdpbusd (Intel from Alder Lake, AMD from Zen 5), one instruction where AVX2
// takes vpmaddubsw, an int16 add and, once a run, vpmaddwd. Exact integer sums: the same
// results. Written as asm so that the file needs no AVX-VNNI target (the caller checks the
// processor: avx_vnni_enabled).
inline __m256i dpbusd_vex(__m256i acc, __m256i u, __m256i s) {
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
  return acc;
}

// Adds sum(c * q) of run k of R rows and T tokens to acc[i * T + j].
template <int kLayout, bool kVnni, int R, int T>
inline void ternary_run(__m256i* acc, const uint8_t* const* rows, const int8_t* const* qs,
                        int64_t k, int64_t prefetch) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t off = run_offset<kLayout>(k);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    prefetch_weights(reinterpret_cast<const char*>(rows[i] + off + prefetch));
  }
  __m256i acc16[R * T];
#pragma GCC unroll 16
  for (int g = 0; g < 4; ++g) {
    const int shift = kLayout == kI2s ? 6 - 2 * g : 2 * g;
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      __m256i c;
      if constexpr (kLayout == kTq1) {
        c = tq1_group(rows[i] + off, k, g);
      } else {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + off));
        c = _mm256_and_si256(_mm256_srli_epi16(w, shift), m3);
      }
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const __m256i a =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs[j] + 128 * k + 32 * g));
        if constexpr (kVnni) {
          acc[i * T + j] = dpbusd_vex(acc[i * T + j], c, a);
          continue;
        }
        const __m256i p = _mm256_maddubs_epi16(c, a);
        acc16[i * T + j] = g == 0 ? p : _mm256_add_epi16(acc16[i * T + j], p);
        // Each group's product added as it comes: GCC 12 otherwise rebalances the four adds
        // into a tree, which keeps every product of a run live and spills the 2 x 2 tile's
        // sums to the stack (16 tokens, kernels_bench: 20-45% slower).
        __asm__("" : "+x"(acc16[i * T + j]));
      }
    }
  }
  if constexpr (!kVnni) {
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) {
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(acc16[i], ones));
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

template <int kLayout, bool kPerBlock, bool kVnni, int R, int T>
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
  __m256i acc[R * T];
  int32_t dots[R * T];

  if constexpr (!kPerBlock) {
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) acc[i] = _mm256_setzero_si256();
    for (int64_t k = 0; k < runs; ++k) ternary_run<kLayout, kVnni, R, T>(acc, rows, qs, k, pf);
    reduce_all_epi32(acc, R * T, dots);
    store_uniform<R, T>(dots, w.d, x, y, y_stride, r, t);
  } else {  // TQ1_0 or TQ2_0, one fp16 d per block of 256 (two runs), summed in block order
    float accf[R * T];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; ++i) accf[i] = 0.0f;
    for (int64_t b = 0; b < runs / 2; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R * T; ++i) acc[i] = _mm256_setzero_si256();
      ternary_run<kLayout, kVnni, R, T>(acc, rows, qs, 2 * b, pf);
      ternary_run<kLayout, kVnni, R, T>(acc, rows, qs, 2 * b + 1, pf);
      reduce_all_epi32(acc, R * T, dots);
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

// Rows [r, r + 4) (or fewer) and tokens [t, t + T): sub-tiles sized to the 16 registers.
template <int kLayout, bool kPerBlock, bool kVnni>
void ternary_block(int rows, int T, const TernaryView& w, const ActsView& x, int64_t r, int64_t t,
                   float* y, int64_t y_stride) {
  // vpdpbusd adds into its sum (a chain of four a run per sum, several cycles each): more sums
  // a tile keep the unit busy.
  if (kVnni && rows == 4 && T > 1) {
    switch (T) {
      case 2:
        ternary_tile<kLayout, kPerBlock, kVnni, 4, 2>(w, x, r, t, y, y_stride);
        return;
      case 3:
        ternary_tile<kLayout, kPerBlock, kVnni, 4, 3>(w, x, r, t, y, y_stride);
        return;
      default:
        ternary_tile<kLayout, kPerBlock, kVnni, 2, 4>(w, x, r, t, y, y_stride);
        ternary_tile<kLayout, kPerBlock, kVnni, 2, 4>(w, x, r + 2, t, y, y_stride);
        return;
    }
  }
  if (rows == 4 && T == 1) {
    ternary_tile<kLayout, kPerBlock, kVnni, 4, 1>(w, x, r, t, y, y_stride);
    return;
  }
  if (rows == 4 && T == 2) {
    ternary_tile<kLayout, kPerBlock, kVnni, 2, 2>(w, x, r, t, y, y_stride);
    ternary_tile<kLayout, kPerBlock, kVnni, 2, 2>(w, x, r + 2, t, y, y_stride);
    return;
  }
  for (int i = 0; i < rows; ++i) {
    switch (T) {
      case 1:
        ternary_tile<kLayout, kPerBlock, kVnni, 1, 1>(w, x, r + i, t, y, y_stride);
        break;
      case 2:
        ternary_tile<kLayout, kPerBlock, kVnni, 1, 2>(w, x, r + i, t, y, y_stride);
        break;
      case 3:
        ternary_tile<kLayout, kPerBlock, kVnni, 1, 3>(w, x, r + i, t, y, y_stride);
        break;
      default:
        ternary_tile<kLayout, kPerBlock, kVnni, 1, 4>(w, x, r + i, t, y, y_stride);
        break;
    }
  }
}

template <int kLayout, bool kPerBlock, bool kVnni>
void ternary_rows(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride, int64_t r0,
                  int64_t r1) {
  const int64_t nt = x.n_tokens;
  if constexpr (kLayout == kTq1) {
    if (nt > 4) {  // more than one token tile: decode each block of rows once, as TQ2_0
      TernaryView t2 = w;
      t2.type = DType::TQ2_0;
      t2.row_bytes = w.n_in / 256 * 66;
      const int64_t block = block_rows(t2.row_bytes, 4);
      uint8_t* buf = ternary_scratch(block * t2.row_bytes);
      t2.data = buf;
      for (int64_t r = r0; r < r1; r += block) {
        const int64_t rows = std::min(block, r1 - r);
        tq1_to_tq2_rows_avx2(w.data + r * w.row_bytes, w.row_bytes, w.n_in, int(rows), buf,
                             t2.row_bytes);
        for (int64_t t = 0; t < nt; t += 4) {
          const int T = int(nt - t < 4 ? nt - t : 4);
          for (int64_t i = 0; i < rows; i += 4) {
            ternary_block<kTq2, kPerBlock, kVnni>(int(std::min<int64_t>(4, rows - i)), T, t2, x, i,
                                                  t, y + r, y_stride);
          }
        }
      }
      return;
    }
  }
  // One token with vpdpbusd: eight rows a tile (eight int32 sums, a code vector and an
  // activation vector fit the sixteen registers; vpmaddubsw's int16 sums would not, nor would
  // TQ1_0's digit arithmetic): 2560 x 6912 on one core 20-22 -> 26-28 GB/s.
  int64_t r0b = r0;
  if (kVnni && kLayout != kTq1 && nt == 1) {
    for (; r0b + 8 <= r1; r0b += 8)
      ternary_tile<kLayout, kPerBlock, kVnni, 8, 1>(w, x, r0b, 0, y, y_stride);
  }
  // Without it, TQ2_0 takes six rows (six int32 and six int16 sums): 2560 x 6912 on one core
  // 18-19 -> 21-22 GB/s; I2_S was no faster (its runs' shifts take a register of their own).
  if (!kVnni && kLayout == kTq2 && nt == 1) {
    for (; r0b + 6 <= r1; r0b += 6)
      ternary_tile<kLayout, kPerBlock, kVnni, 6, 1>(w, x, r0b, 0, y, y_stride);
  }
  // Rows in blocks (block_rows), each group of four tokens over a block before the next, as
  // the AVX-512 rows do: the tiles of three and four tokens take one row at a time, so without
  // blocks a group's activations came from L2 again for every row.
  const int64_t block = block_rows(w.row_bytes, 4);
  for (int64_t r = r0b; r < r1; r += block) {
    const int64_t end = std::min(r1, r + block);
    for (int64_t t = 0; t < nt; t += 4) {
      const int T = int(nt - t < 4 ? nt - t : 4);
      for (int64_t rb = r; rb < end; rb += 4) {
        ternary_block<kLayout, kPerBlock, kVnni>(int(std::min<int64_t>(4, end - rb)), T, w, x, rb,
                                                 t, y, y_stride);
      }
    }
  }
}

// ---- float weights x f32 ----

// 8 weights starting at k (a multiple of 8) of a row, as f32.
template <DType kType>
inline __m256 load8(const uint8_t* row, int64_t k) {
  if constexpr (kType == DType::Q8_0) {
    const uint8_t* blk = row + (k / 32) * 34;
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + (k % 32)));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(half_at(blk)));
  } else if constexpr (kType == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (kType == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
  } else {  // BF16
    const __m256i h =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  }
}

// The last `left` < 8 weights of an f32, f16 or bf16 row from k on, zero padded.
template <DType kType>
inline __m256 load8_tail(const uint8_t* row, int64_t k, int64_t left) {
  constexpr int kSize = kType == DType::F32 ? 4 : 2;
  alignas(32) uint8_t tail[32] = {};
  std::memcpy(tail, row + kSize * k, size_t(left) * kSize);
  return load8<kType>(tail, 0);
}

inline __m256 load_x8(const float* p, int64_t left) {
  if (left >= 8) return _mm256_loadu_ps(p);
  alignas(32) float tail[8] = {};
  std::memcpy(tail, p, size_t(left) * 4);
  return _mm256_load_ps(tail);
}

template <int R, int T>
inline void store_sums(const __m256* acc, float* y, int64_t y_stride, int64_t r, int64_t t) {
  const __m256 z = _mm256_setzero_ps();
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

// Q6_K: d * scales[i] for the 16 sub-blocks of a block.
inline void q6k_scales(const uint8_t* blk, float* ds) {
  const __m256 d = _mm256_set1_ps(half_at(blk + 208));
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
  _mm256_store_ps(ds, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
  _mm256_store_ps(
      ds + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
}

// Q6_K: int8 weights (q - 32) 128h + 32j .. 128h + 32j + 31 of a block. ql byte 64h + r holds
// weight r's low nibble and weight r + 64's high nibble; qh byte 32h + m holds the top bits of
// weights m + 32j at shift 2j.
inline __m256i q6k_group(const uint8_t* blk, int h, int j) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  const __m256i ql =
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32 * (j & 1)));
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
  const __m256i lo = _mm256_and_si256(j < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
  __m256i hi;  // bits 2j..2j+1 moved to 4..5 (16-bit shifts: the mask drops crossed bits)
  switch (j) {
    case 0:
      hi = _mm256_slli_epi16(qh, 4);
      break;
    case 1:
      hi = _mm256_slli_epi16(qh, 2);
      break;
    case 2:
      hi = qh;
      break;
    default:
      hi = _mm256_srli_epi16(qh, 2);
      break;
  }
  return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_and_si256(hi, m30)), _mm256_set1_epi8(32));
}

// *s in every lane by a load (vbroadcastss from memory: no shuffle), which the compiler would
// otherwise take from a vector of scales already in a register with a permute.
inline __m256 broadcast_from(const float* s) {
  __m256 r;
  __asm__("vbroadcastss %1, %0" : "=x"(r) : "m"(*s));
  return r;
}

// Weights 8c..8c+7 (c in 0..3) of a group as f32 times ds.
inline __m256 q6k_chunk(__m256i v, int c, float ds) {
  __m128i q;
  switch (c) {
    case 0:
      q = _mm256_castsi256_si128(v);
      break;
    case 1:
      q = _mm_unpackhi_epi64(_mm256_castsi256_si128(v), _mm256_castsi256_si128(v));
      break;
    case 2:
      q = _mm256_extracti128_si256(v, 1);
      break;
    default: {
      const __m128i u = _mm256_extracti128_si256(v, 1);
      q = _mm_unpackhi_epi64(u, u);
    }
  }
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(ds));
}

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
  __m256 acc[R * T];
#pragma GCC unroll 16
  for (int i = 0; i < R * T; ++i) acc[i] = _mm256_setzero_ps();

  const int64_t pf = prefetch_distance(w.row_bytes);
  if constexpr (kType == DType::Q6_K) {
    alignas(32) float ds[R][16];
    for (int64_t b = 0; b < n / 256; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const char* next = reinterpret_cast<const char*>(rows[i] + b * 210 + pf);
        for (int line = 0; line < 4; ++line) prefetch_weights(next + 64 * line);
        q6k_scales(rows[i] + b * 210, ds[i]);
      }
#pragma GCC unroll 16
      for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 16
        for (int jg = 0; jg < 4; ++jg) {
          // The group's int8 weights through memory, and each scale broadcast from ds by a
          // load: the compiler kept ds in registers and took a shuffle to pick each scale out
          // (kernels_bench q6_k 2560 x 1024, one token, --level avx2, AMD Zen 5: 7.1-7.4 ->
          // 9.1-9.9 GB/s a core).
          alignas(32) int8_t q8[R][32];
#pragma GCC unroll 16
          for (int i = 0; i < R; ++i) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(q8[i]),
                               q6k_group(rows[i] + b * 210, h, jg));
          }
#pragma GCC unroll 16
          for (int c = 0; c < 4; ++c) {
            const int64_t k = b * 256 + h * 128 + jg * 32 + c * 8;
            const int sub = 8 * h + 2 * jg + c / 2;
            __m256 wf[R];
#pragma GCC unroll 16
            for (int i = 0; i < R; ++i) {
              const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q8[i] + 8 * c));
              wf[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                                    broadcast_from(&ds[i][sub]));
            }
#pragma GCC unroll 16
            for (int j = 0; j < T; ++j) {
              const __m256 xv = _mm256_loadu_ps(xs[j] + k);
#pragma GCC unroll 16
              for (int i = 0; i < R; ++i)
                acc[i * T + j] = _mm256_fmadd_ps(wf[i], xv, acc[i * T + j]);
            }
          }
        }
      }
    }
  } else if constexpr (kType == DType::Q8_0) {
    for (int64_t b = 0; b < n / 32; ++b) {
      __m256 d[R];
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        prefetch_weights(reinterpret_cast<const char*>(rows[i] + b * 34 + pf));
        d[i] = _mm256_set1_ps(half_at(rows[i] + b * 34));
      }
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        __m256 wf[R];
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const __m128i q =
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(rows[i] + b * 34 + 2 + 8 * c));
          wf[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d[i]);
        }
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const __m256 xv = _mm256_loadu_ps(xs[j] + b * 32 + 8 * c);
#pragma GCC unroll 16
          for (int i = 0; i < R; ++i) acc[i * T + j] = _mm256_fmadd_ps(wf[i], xv, acc[i * T + j]);
        }
      }
    }
  } else {
    int64_t k = 0;
    constexpr int64_t kStep2 = kType == DType::F32 ? 64 : 32;  // bytes per 16 weights
    for (; k + 8 <= n; k += 8) {
      __m256 wf[R];
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        // One prefetch a 64-byte line: 16 f32 weights, 32 f16 or bf16.
        if ((k & (kStep2 == 64 ? 8 : 24)) == 0) {
          prefetch_weights(reinterpret_cast<const char*>(rows[i] + (k / 16) * kStep2 + pf));
        }
        wf[i] = load8<kType>(rows[i], k);
      }
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const __m256 xv = _mm256_loadu_ps(xs[j] + k);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) acc[i * T + j] = _mm256_fmadd_ps(wf[i], xv, acc[i * T + j]);
      }
    }
    if constexpr (kType == DType::F32 || kType == DType::F16 || kType == DType::BF16) {
      if (k < n) {
        __m256 wf[R];
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) wf[i] = load8_tail<kType>(rows[i], k, n - k);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const __m256 xv = load_x8(xs[j] + k, n - k);
#pragma GCC unroll 16
          for (int i = 0; i < R; ++i) acc[i * T + j] = _mm256_fmadd_ps(wf[i], xv, acc[i * T + j]);
        }
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
                    int64_t r, int64_t t, const uint8_t* const* ahead, int64_t row_bytes) {
  const float* xs[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) xs[j] = x + (t + j) * n;
  __m256 acc[R * T];
#pragma GCC unroll 16
  for (int i = 0; i < R * T; ++i) acc[i] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    if (ahead && k % 16 == 0) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) prefetch_weights(ahead[i] + k * row_bytes / n);
    }
    __m256 wf[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wf[i] = _mm256_loadu_ps(wr[i] + k);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m256 xv = _mm256_loadu_ps(xs[j] + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i * T + j] = _mm256_fmadd_ps(wf[i], xv, acc[i * T + j]);
    }
  }
  if (k < n) {
    __m256 wf[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wf[i] = load_x8(wr[i] + k, n - k);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m256 xv = load_x8(xs[j] + k, n - k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i * T + j] = _mm256_fmadd_ps(wf[i], xv, acc[i * T + j]);
    }
  }
  store_sums<R, T>(acc, y, y_stride, r, t);
}

template <DType kType>
void decode_row(const uint8_t* row, int64_t n, float* out) {
  if constexpr (kType == DType::Q6_K) {
    alignas(32) float ds[16];
    for (int64_t b = 0; b < n / 256; ++b) {
      q6k_scales(row + b * 210, ds);
#pragma GCC unroll 16
      for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 16
        for (int jg = 0; jg < 4; ++jg) {
          const __m256i v = q6k_group(row + b * 210, h, jg);
#pragma GCC unroll 16
          for (int c = 0; c < 4; ++c) {
            _mm256_storeu_ps(out + b * 256 + h * 128 + jg * 32 + c * 8,
                             q6k_chunk(v, c, ds[8 * h + 2 * jg + c / 2]));
          }
        }
      }
    }
  } else {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(out + k, load8<kType>(row, k));
    if constexpr (kType == DType::F16 || kType == DType::BF16) {
      if (k < n) {
        alignas(32) float tail[8];
        _mm256_store_ps(tail, load8_tail<kType>(row, k, n - k));
        std::memcpy(out + k, tail, size_t(n - k) * 4);
      }
    }
  }
}

// Rows [r, r + rows) (rows <= 4), tokens [0, T) with T <= 3, decoded in registers. Plain
// f32 / f16 / bf16 rows stream fastest two at a time (fewer concurrent streams); q8_0 and
// q6_K need more work per weight and share each activation load over four rows.
template <DType kType>
void float_fused_block(int rows, int T, const FloatView& w, const float* x, float* y,
                       int64_t y_stride, int64_t r) {
  constexpr bool kQuant = kType == DType::Q8_0 || kType == DType::Q6_K;
  if (kQuant && rows == 4 && T == 1) return float_tile_fused<kType, 4, 1>(w, x, y, y_stride, r, 0);
  if (kType == DType::Q8_0 && rows == 4 && T == 2) {
    return float_tile_fused<kType, 4, 2>(w, x, y, y_stride, r, 0);
  }
  // f16 and bf16 rows: four a tile for one or two tokens (bench/kernels_bench --level avx2,
  // 2560 x 128256 f16, one token, 2 threads: 18-22 ms with two, 13-16 with four).
  constexpr bool kHalf = kType == DType::F16 || kType == DType::BF16;
  if (kHalf && rows == 4 && T == 1) return float_tile_fused<kType, 4, 1>(w, x, y, y_stride, r, 0);
  if (kHalf && rows == 4 && T == 2) return float_tile_fused<kType, 4, 2>(w, x, y, y_stride, r, 0);
  int i = 0;
  for (; i + 2 <= rows; i += 2) {
    switch (T) {
      case 1:
        float_tile_fused<kType, 2, 1>(w, x, y, y_stride, r + i, 0);
        break;
      case 2:
        float_tile_fused<kType, 2, 2>(w, x, y, y_stride, r + i, 0);
        break;
      default:
        float_tile_fused<kType, 2, 3>(w, x, y, y_stride, r + i, 0);
        break;
    }
  }
  for (; i < rows; ++i) {
    switch (T) {
      case 1:
        float_tile_fused<kType, 1, 1>(w, x, y, y_stride, r + i, 0);
        break;
      case 2:
        float_tile_fused<kType, 1, 2>(w, x, y, y_stride, r + i, 0);
        break;
      default:
        float_tile_fused<kType, 1, 3>(w, x, y, y_stride, r + i, 0);
        break;
    }
  }
}

// float_tile_f32 of R rows for T (1..4) tokens.
template <int R>
void float_f32_for(int T, const float* const* wr, int64_t n, const float* x, float* y,
                   int64_t y_stride, int64_t r, int64_t t, const uint8_t* const* ahead,
                   int64_t row_bytes) {
  switch (T) {
    case 1:
      return float_tile_f32<R, 1>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
    case 2:
      return float_tile_f32<R, 2>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
    case 3:
      return float_tile_f32<R, 3>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
    default:
      return float_tile_f32<R, 4>(wr, n, x, y, y_stride, r, t, ahead, row_bytes);
  }
}

// Decoded rows wr[0..rows) x tokens [t, t + T), T <= 4; ahead as float_tile_f32's (rows of
// them, or nullptr).
// Tiles of three rows, then two, then one.
void float_f32_block(int rows, int T, const float* const* wr, int64_t n, const float* x, float* y,
                     int64_t y_stride, int64_t r, int64_t t, const uint8_t* const* ahead,
                     int64_t row_bytes) {
  const auto pf = [&](int i) { return ahead ? ahead + i : nullptr; };
  int i = 0;
  for (; i + 3 <= rows; i += 3)
    float_f32_for<3>(T, wr + i, n, x, y, y_stride, r + i, t, pf(i), row_bytes);
  for (; i + 2 <= rows; i += 2)
    float_f32_for<2>(T, wr + i, n, x, y, y_stride, r + i, t, pf(i), row_bytes);
  for (; i < rows; ++i) float_f32_for<1>(T, wr + i, n, x, y, y_stride, r + i, t, pf(i), row_bytes);
}

template <DType kType>
void float_rows(const FloatView& w, const float* x, int64_t nt, float* y, int64_t y_stride,
                int64_t r0, int64_t r1) {
  const int64_t n = w.n_in;
  if (nt < 4) {
    constexpr int kRows = 4;
    for (int64_t r = r0; r < r1; r += kRows) {
      float_fused_block<kType>(int(r1 - r < kRows ? r1 - r : kRows), int(nt), w, x, y, y_stride, r);
    }
    return;
  }
  constexpr int kRows = 6;
  const int64_t pitch = (n + 7) / 8 * 8;
  float* scratch = kType == DType::F32 ? nullptr : float_scratch(kRows * pitch);
  for (int64_t r = r0; r < r1; r += kRows) {
    const int rows = int(r1 - r < kRows ? r1 - r : kRows);
    const float* wr[kRows];
    for (int i = 0; i < rows; ++i) {
      const uint8_t* row = w.data + (r + i) * w.row_bytes;
      if constexpr (kType == DType::F32) {
        wr[i] = reinterpret_cast<const float*>(row);
      } else {
        decode_row<kType>(row, n, scratch + i * pitch);
        wr[i] = scratch + i * pitch;
      }
    }
    // The next panel's rows stream in while the first group of tokens computes on this one.
    const bool next = kType != DType::F32 && r + 2 * kRows <= r1;
    const uint8_t* ahead[kRows] = {};
    for (int i = 0; next && i < kRows; ++i) ahead[i] = w.data + (r + kRows + i) * w.row_bytes;
    for (int64_t t = 0; t < nt; t += 4) {
      float_f32_block(rows, int(nt - t < 4 ? nt - t : 4), wr, n, x, y, y_stride, r, t,
                      next && t == 0 ? ahead : nullptr, w.row_bytes);
    }
  }
}

template <bool kVnni>
void ternary_matmul_level(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride,
                          int64_t r0, int64_t r1) {
  if (w.type == DType::I2_S) {
    ternary_rows<kI2s, false, kVnni>(w, x, y, y_stride, r0, r1);
  } else if (w.type == DType::TQ1_0) {
    if (w.uniform) {
      ternary_rows<kTq1, false, kVnni>(w, x, y, y_stride, r0, r1);
    } else {
      ternary_rows<kTq1, true, kVnni>(w, x, y, y_stride, r0, r1);
    }
  } else if (w.uniform) {
    ternary_rows<kTq2, false, kVnni>(w, x, y, y_stride, r0, r1);
  } else {
    ternary_rows<kTq2, true, kVnni>(w, x, y, y_stride, r0, r1);
  }
}

}  // namespace

void quantize_acts_avx2(const float* x, int64_t n_tokens, int64_t n, ActsOut out) {
  const int64_t runs = (n + 127) / 128;
  for (int64_t t = 0; t < n_tokens; ++t) {
    quantize_row(x + t * n, n, out.q + t * n, out.scale + t, out.sums + t * runs);
  }
}

void tq1_to_tq2_rows_avx2(const uint8_t* src, int64_t src_pitch, int64_t n_in, int rows,
                          uint8_t* dst, int64_t dst_pitch) {
  for (int i = 0; i < rows; ++i) {
    for (int64_t b = 0; b < n_in / 256; ++b) {
      const uint8_t* blk = src + i * src_pitch + 54 * b;
      uint8_t* out = dst + i * dst_pitch + 66 * b;
      for (int k = 0; k < 2; ++k) {  // TQ2_0 byte 32k + m: weights 128k + 32g + m at bits 2g
        __m256i v = tq1_group(blk, k, 0);
        for (int g = 1; g < 4; ++g) {
          v = _mm256_or_si256(v, _mm256_slli_epi16(tq1_group(blk, k, g), 2 * g));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * k), v);
      }
      std::memcpy(out + 64, blk + 52, 2);
    }
  }
}

void ternary_matmul_avx2(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride,
                         int64_t r0, int64_t r1) {
  if (avx_vnni_enabled()) {
    ternary_matmul_level<true>(w, x, y, y_stride, r0, r1);
  } else {
    ternary_matmul_level<false>(w, x, y, y_stride, r0, r1);
  }
}

void float_matmul_avx2(const FloatView& w, const float* x, int64_t n_tokens, float* y,
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

void float_decode_rows_avx2(const FloatView& w, int64_t r0, int64_t r1, float* out) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    float* o = out + (r - r0) * w.n_in;
    switch (w.type) {
      case DType::F32:
        std::memcpy(o, row, size_t(w.n_in) * 4);
        break;
      case DType::F16:
        decode_row<DType::F16>(row, w.n_in, o);
        break;
      case DType::BF16:
        decode_row<DType::BF16>(row, w.n_in, o);
        break;
      case DType::Q8_0:
        decode_row<DType::Q8_0>(row, w.n_in, o);
        break;
      case DType::Q6_K:
        decode_row<DType::Q6_K>(row, w.n_in, o);
        break;
      default:
        return;  // rejected by the dispatcher
    }
  }
}

void half_to_float_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  if (i < n) {  // the tail through a padded block (no scalar helper shared with other files)
    alignas(32) uint16_t h[8] = {};
    alignas(32) float f[8];
    std::memcpy(h, src + i, size_t(n - i) * 2);
    _mm256_store_ps(f, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h))));
    std::memcpy(dst + i, f, size_t(n - i) * 4);
  }
}

void float_to_half_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  if (i < n) {
    alignas(32) float f[8] = {};
    alignas(32) uint16_t h[8];
    std::memcpy(f, src + i, size_t(n - i) * 4);
    _mm_store_si128(reinterpret_cast<__m128i*>(h),
                    _mm256_cvtps_ph(_mm256_load_ps(f), _MM_FROUND_TO_NEAREST_INT));
    std::memcpy(dst + i, h, size_t(n - i) * 2);
  }
}

}  // namespace trit::engine::cpu

#endif
