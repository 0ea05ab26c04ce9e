// attention_rows.h: attention's score and value loops with vector lanes.
//
// Scores: a query row's score against key j is a dot product over d summed in order, so the
// lanes cannot run over d without changing its bits; they run over 16 keys instead. The keys'
// rows are transposed into a tile (dimension-major) once and read by every query row that
// needs them: the heads of a GQA group, and the tokens of a prompt chunk or training sequence.
// Values: each output dimension sums its keys in order, so the lanes run over d.
//
// The portable version is plain C++ on GCC/Clang vector types (which the compiler lowers to
// the instruction set of the function it is inlined into); on x86 it is compiled again for
// AVX2, and AVX-512 has its own with the tile transposed in registers. All give the same bits.
#include "backend/cpu/attention_rows.h"

#include <algorithm>

#include "backend/cpu/simd_lanes.h"

namespace trit::engine {
namespace {

constexpr int64_t kT = kAttnKeyTile;
// Value rows prefetched this many keys ahead.
constexpr int64_t kValuesAhead = 8;

using lanes::kLane;
using lanes::Lane;
static_assert(kT == 2 * kLane);

// Keys [j0, j0 + m) of the KV head into tile[d * kT + l], lanes l >= m zero.
TRIT_LANES_INLINE void transpose_keys(const float* k, int64_t stride, int64_t j0, int64_t m,
                                      int64_t head_dim, float* tile) {
  for (int64_t l = 0; l < kT; ++l) {
    if (l < m) {
      const float* kj = k + (j0 + l) * stride;
      for (int64_t d = 0; d < head_dim; ++d) tile[d * kT + l] = kj[d];
    } else {
      for (int64_t d = 0; d < head_dim; ++d) tile[d * kT + l] = 0.0f;
    }
  }
}

// R rows against one tile: acc = sum_d q[d] * tile[d] (in order over d), then * scale into s.
template <int R>
TRIT_LANES_INLINE void tile_rows(const float* const* q, const int64_t* n_keys, int64_t j0,
                                 int64_t head_dim, float scale, float* s, int64_t ld,
                                 const float* tile) {
  Lane acc[R][2] = {};
  for (int64_t d = 0; d < head_dim; ++d) {
    Lane t0, t1;
    lanes::load(t0, tile + d * kT);
    lanes::load(t1, tile + d * kT + kLane);
    for (int r = 0; r < R; ++r) {
      const float qd = q[r][d];
      acc[r][0] += qd * t0;
      acc[r][1] += qd * t1;
    }
  }
  for (int r = 0; r < R; ++r) {
    float out[kT];
    const Lane s0 = acc[r][0] * scale, s1 = acc[r][1] * scale;
    lanes::store(out, s0);
    lanes::store(out + kLane, s1);
    const int64_t valid = std::min(kT, n_keys[r] - j0);
    for (int64_t l = 0; l < valid; ++l) s[r * ld + j0 + l] = out[l];
  }
}

// The next run of up to four consecutive rows from *i that have keys in the tile at j0 (their
// sums are in flight together); its length, 0 when no row is left. *i moves to its first row.
TRIT_LANES_INLINE int next_run(const int64_t* n_keys, int64_t n_rows, int64_t j0, int64_t* i) {
  while (*i < n_rows && n_keys[*i] <= j0) ++*i;
  int run = 0;
  while (*i + run < n_rows && run < 4 && n_keys[*i + run] > j0) ++run;
  return run;
}

TRIT_LANES_INLINE void scores_portable(const float* const* q, const int64_t* n_keys, int64_t n_rows,
                                       const float* k, int64_t stride, int64_t head_dim,
                                       float scale, float* s, int64_t ld, float* tile) {
  int64_t most = 0;
  for (int64_t i = 0; i < n_rows; ++i) most = std::max(most, n_keys[i]);
  for (int64_t j0 = 0; j0 < most; j0 += kT) {
    // The next tile's keys while this one computes (scores_avx512 says why).
    for (int64_t l = j0 + kT; l < std::min(most, j0 + 2 * kT); ++l) {
      for (int64_t d0 = 0; d0 < head_dim; d0 += 16) __builtin_prefetch(k + l * stride + d0);
    }
    transpose_keys(k, stride, j0, std::min(kT, most - j0), head_dim, tile);
    int64_t i = 0;
    for (int run; (run = next_run(n_keys, n_rows, j0, &i)) > 0; i += run) {
      const float* const* qr = q + i;
      float* sr = s + i * ld;
      switch (run) {
        case 4:
          tile_rows<4>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
          break;
        case 3:
          tile_rows<3>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
          break;
        case 2:
          tile_rows<2>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
          break;
        default:
          tile_rows<1>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
      }
    }
  }
}

TRIT_LANES_INLINE void values_portable(float* out, const float* p, float inv, const float* v,
                                       int64_t stride, int64_t n, int64_t head_dim) {
  int64_t d0 = 0;
  // Four lanes (32 dimensions) held while the keys go by, then the rest one at a time.
  for (; d0 + 4 * kLane <= head_dim; d0 += 4 * kLane) {
    Lane acc[4] = {};
    for (int64_t j = 0; j < n; ++j) {
      const float pj = p[j] * inv;
      const float* vj = v + j * stride + d0;
      if (j + kValuesAhead < n) {
        __builtin_prefetch(vj + kValuesAhead * stride);
        __builtin_prefetch(vj + kValuesAhead * stride + 16);
      }
      for (int c = 0; c < 4; ++c) {
        Lane x;
        lanes::load(x, vj + c * kLane);
        acc[c] += pj * x;
      }
    }
    for (int c = 0; c < 4; ++c) lanes::store(out + d0 + c * kLane, acc[c]);
  }
  if (d0 == head_dim) return;
  std::fill(out + d0, out + head_dim, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float pj = p[j] * inv;
    const float* vj = v + j * stride;
    for (int64_t d = d0; d < head_dim; ++d) out[d] += pj * vj[d];
  }
}

// y += a * x over n: lanes of eight, the rest one at a time.
TRIT_LANES_INLINE void axpy_portable(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLane <= n; i += kLane) {
    Lane yv, xv;
    lanes::load(yv, y + i);
    lanes::load(xv, x + i);
    yv += a * xv;
    lanes::store(y + i, yv);
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

// A dot product in the order attention_value_dots states: 16 lanes, then pairwise.
TRIT_LANES_INLINE float dot_portable(const float* a, const float* b, int64_t n) {
  Lane acc[2] = {};
  int64_t k = 0;
  for (; k + 2 * kLane <= n; k += 2 * kLane) {
    for (int c = 0; c < 2; ++c) {
      Lane av, bv;
      lanes::load(av, a + k + c * kLane);
      lanes::load(bv, b + k + c * kLane);
      acc[c] += av * bv;
    }
  }
  float lane[2 * kLane];
  lanes::store(lane, acc[0]);
  lanes::store(lane + kLane, acc[1]);
  for (int j = 0; k < n; ++k, ++j) lane[j] += a[k] * b[k];
  for (int w = kLane; w > 0; w /= 2) {
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  }
  return lane[0];
}

TRIT_LANES_INLINE void value_dots_portable(float* dp, const float* dout, const float* v,
                                           int64_t stride, int64_t n, int64_t head_dim) {
  for (int64_t j = 0; j < n; ++j) dp[j] = dot_portable(dout, v + j * stride, head_dim);
}

TRIT_LANES_INLINE void backward_row_portable(float* p, const float* dp, float big_d, float scale,
                                             int64_t n, const float* q, const float* dout,
                                             float* dq, const float* k, float* dk, float* dv,
                                             int64_t stride, int64_t head_dim) {
  for (int64_t j = 0; j < n; ++j) {
    axpy_portable(dv + j * stride, p[j], dout, head_dim);
    p[j] = p[j] * (dp[j] - big_d) * scale;
  }
  for (int64_t j = 0; j < n; ++j) {
    axpy_portable(dq, p[j], k + j * stride, head_dim);
    axpy_portable(dk + j * stride, p[j], q, head_dim);
  }
}

void value_dots_baseline(float* dp, const float* dout, const float* v, int64_t stride, int64_t n,
                         int64_t head_dim) {
  value_dots_portable(dp, dout, v, stride, n, head_dim);
}

void backward_row_baseline(float* p, const float* dp, float big_d, float scale, int64_t n,
                           const float* q, const float* dout, float* dq, const float* k, float* dk,
                           float* dv, int64_t stride, int64_t head_dim) {
  backward_row_portable(p, dp, big_d, scale, n, q, dout, dq, k, dk, dv, stride, head_dim);
}

void scores_baseline(const float* const* q, const int64_t* n_keys, int64_t n_rows, const float* k,
                     int64_t stride, int64_t head_dim, float scale, float* s, int64_t ld,
                     float* tile) {
  scores_portable(q, n_keys, n_rows, k, stride, head_dim, scale, s, ld, tile);
}

void values_baseline(float* const* out, const float* p, int64_t ldp, const float* inv,
                     int64_t n_rows, const float* v, int64_t stride, int64_t n, int64_t head_dim) {
  for (int64_t i = 0; i < n_rows; ++i) {
    values_portable(out[i], p + i * ldp, inv[i], v, stride, n, head_dim);
  }
}

#ifdef TRIT_LANES_X86
TRIT_LANES_AVX2 void scores_avx2(const float* const* q, const int64_t* n_keys, int64_t n_rows,
                                 const float* k, int64_t stride, int64_t head_dim, float scale,
                                 float* s, int64_t ld, float* tile) {
  scores_portable(q, n_keys, n_rows, k, stride, head_dim, scale, s, ld, tile);
}

TRIT_LANES_AVX2 void values_avx2(float* const* out, const float* p, int64_t ldp, const float* inv,
                                 int64_t n_rows, const float* v, int64_t stride, int64_t n,
                                 int64_t head_dim) {
  for (int64_t i = 0; i < n_rows; ++i) {
    values_portable(out[i], p + i * ldp, inv[i], v, stride, n, head_dim);
  }
}

// 16 rows of 16 floats (a[l], key l's dimensions d0 .. d0 + 15) to 16 rows of 16 keys
// (b[c], dimension d0 + c of keys 0 .. 15): pairs, then quads within each 128-bit lane, then
// the four lanes.
TRIT_LANES_AVX512 TRIT_LANES_INLINE void transpose16(__m512 a[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
  }
  // u[4g + m], lane k: rows 4g .. 4g + 3 at column 4k + m
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 v02 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
    const __m512 v13 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
    const __m512 w02 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
    const __m512 w13 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
    a[m] = _mm512_shuffle_f32x4(v02, w02, 0x88);
    a[8 + m] = _mm512_shuffle_f32x4(v02, w02, 0xDD);
    a[4 + m] = _mm512_shuffle_f32x4(v13, w13, 0x88);
    a[12 + m] = _mm512_shuffle_f32x4(v13, w13, 0xDD);
  }
}

template <int R>
TRIT_LANES_AVX512 TRIT_LANES_INLINE void tile_rows_avx512(const float* const* q,
                                                          const int64_t* n_keys, int64_t j0,
                                                          int64_t head_dim, float scale, float* s,
                                                          int64_t ld, const float* tile) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t d = 0; d < head_dim; ++d) {
    const __m512 t = _mm512_loadu_ps(tile + d * kT);
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(_mm512_set1_ps(q[r][d]), t));
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(s + r * ld + j0, lanes::first_lanes(n_keys[r] - j0),
                          _mm512_mul_ps(acc[r], sc));
  }
}

TRIT_LANES_AVX512 void scores_avx512(const float* const* q, const int64_t* n_keys, int64_t n_rows,
                                     const float* k, int64_t stride, int64_t head_dim, float scale,
                                     float* s, int64_t ld, float* tile) {
  int64_t most = 0;
  for (int64_t i = 0; i < n_rows; ++i) most = std::max(most, n_keys[i]);
  for (int64_t j0 = 0; j0 < most; j0 += kT) {
    const int64_t m = std::min(kT, most - j0);
    // The next tile's keys, a line at a time, while this one computes: a cache's rows lie a
    // whole row of every KV head apart, which the hardware's prefetchers follow poorly.
    for (int64_t l = j0 + kT; l < std::min(most, j0 + 2 * kT); ++l) {
      for (int64_t d0 = 0; d0 < head_dim; d0 += 16) {
        _mm_prefetch(reinterpret_cast<const char*>(k + l * stride + d0), _MM_HINT_T0);
      }
    }
    for (int64_t d0 = 0; d0 < head_dim; d0 += 16) {
      const __mmask16 dm = lanes::first_lanes(head_dim - d0);
      __m512 a[16];
      for (int64_t l = 0; l < 16; ++l) {
        a[l] = l < m ? _mm512_maskz_loadu_ps(dm, k + (j0 + l) * stride + d0) : _mm512_setzero_ps();
      }
      transpose16(a);
      const int64_t rows = std::min<int64_t>(16, head_dim - d0);
      for (int64_t c = 0; c < rows; ++c) _mm512_storeu_ps(tile + (d0 + c) * kT, a[c]);
    }
    int64_t i = 0;
    for (int run; (run = next_run(n_keys, n_rows, j0, &i)) > 0; i += run) {
      const float* const* qr = q + i;
      float* sr = s + i * ld;
      switch (run) {
        case 4:
          tile_rows_avx512<4>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
          break;
        case 3:
          tile_rows_avx512<3>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
          break;
        case 2:
          tile_rows_avx512<2>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
          break;
        default:
          tile_rows_avx512<1>(qr, n_keys + i, j0, head_dim, scale, sr, ld, tile);
      }
    }
  }
}

// R rows that share their keys: 64 dimensions (four vectors) of each held while the keys go
// by, every value of v loaded once for all of them; the last block masked.
template <int R>
TRIT_LANES_AVX512 TRIT_LANES_INLINE void values_rows_avx512(float* const* out, const float* p,
                                                            int64_t ldp, const float* inv,
                                                            const float* v, int64_t stride,
                                                            int64_t n, int64_t head_dim) {
  for (int64_t d0 = 0; d0 < head_dim; d0 += 64) {
    __mmask16 dm[4];
    for (int c = 0; c < 4; ++c)
      dm[c] = lanes::first_lanes(std::max<int64_t>(0, head_dim - d0 - 16 * c));
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < n; ++j) {
      const float* vj = v + j * stride + d0;
      if (j + kValuesAhead < n) {  // as the scores' keys: the rows lie far apart
        for (int c = 0; c < 4 && 16 * c < head_dim - d0; ++c) {
          _mm_prefetch(reinterpret_cast<const char*>(vj + kValuesAhead * stride + 16 * c),
                       _MM_HINT_T0);
        }
      }
      __m512 x[4];
      for (int c = 0; c < 4; ++c) x[c] = _mm512_maskz_loadu_ps(dm[c], vj + 16 * c);
      for (int r = 0; r < R; ++r) {
        const __m512 pj = _mm512_set1_ps(p[r * ldp + j] * inv[r]);
        for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_add_ps(acc[r][c], _mm512_mul_ps(pj, x[c]));
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < 4; ++c) _mm512_mask_storeu_ps(out[r] + d0 + 16 * c, dm[c], acc[r][c]);
    }
  }
}

TRIT_LANES_AVX512 void values_avx512(float* const* out, const float* p, int64_t ldp,
                                     const float* inv, int64_t n_rows, const float* v,
                                     int64_t stride, int64_t n, int64_t head_dim) {
  int64_t i = 0;
  for (; i + 4 <= n_rows; i += 4) {
    values_rows_avx512<4>(out + i, p + i * ldp, ldp, inv + i, v, stride, n, head_dim);
  }
  for (; i + 2 <= n_rows; i += 2) {
    values_rows_avx512<2>(out + i, p + i * ldp, ldp, inv + i, v, stride, n, head_dim);
  }
  if (i < n_rows) values_rows_avx512<1>(out + i, p + i * ldp, ldp, inv + i, v, stride, n, head_dim);
}

TRIT_LANES_AVX2 void value_dots_avx2(float* dp, const float* dout, const float* v, int64_t stride,
                                     int64_t n, int64_t head_dim) {
  value_dots_portable(dp, dout, v, stride, n, head_dim);
}

TRIT_LANES_AVX2 void backward_row_avx2(float* p, const float* dp, float big_d, float scale,
                                       int64_t n, const float* q, const float* dout, float* dq,
                                       const float* k, float* dk, float* dv, int64_t stride,
                                       int64_t head_dim) {
  backward_row_portable(p, dp, big_d, scale, n, q, dout, dq, k, dk, dv, stride, head_dim);
}

TRIT_LANES_AVX512 TRIT_LANES_INLINE void axpy_avx512(float* y, float a, const float* x, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lanes::first_lanes(n - i);
    const __m512 yv = _mm512_maskz_loadu_ps(m, y + i);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(yv, _mm512_mul_ps(av, xv)));
  }
}

// dot_portable's order: one vector is the 16 lanes (the tail added to its first lanes only),
// then halves added: lanes 8..15 into 0..7, 4..7 into 0..3, 2..3 into 0..1, 1 into 0.
TRIT_LANES_AVX512 TRIT_LANES_INLINE float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k)));
  }
  if (k < n) {
    const __mmask16 m = lanes::first_lanes(n - k);
    const __m512 prod =
        _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k));
    acc = _mm512_mask_add_ps(acc, m, acc, prod);
  }
  const __m256 s8 =
      _mm256_add_ps(_mm512_castps512_ps256(acc),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

TRIT_LANES_AVX512 void value_dots_avx512(float* dp, const float* dout, const float* v,
                                         int64_t stride, int64_t n, int64_t head_dim) {
  for (int64_t j = 0; j < n; ++j) dp[j] = dot_avx512(dout, v + j * stride, head_dim);
}

TRIT_LANES_AVX512 void backward_row_avx512(float* p, const float* dp, float big_d, float scale,
                                           int64_t n, const float* q, const float* dout, float* dq,
                                           const float* k, float* dk, float* dv, int64_t stride,
                                           int64_t head_dim) {
  for (int64_t j = 0; j < n; ++j) {
    axpy_avx512(dv + j * stride, p[j], dout, head_dim);
    p[j] = p[j] * (dp[j] - big_d) * scale;
  }
  for (int64_t j = 0; j < n; ++j) {
    axpy_avx512(dq, p[j], k + j * stride, head_dim);
    axpy_avx512(dk + j * stride, p[j], q, head_dim);
  }
}
#endif

}  // namespace

void attention_rows_scores(const float* const* q, const int64_t* n_keys, int64_t n_rows,
                           const float* k, int64_t stride, int64_t head_dim, float scale, float* s,
                           int64_t ld, float* tile, CpuLevel level) {
  if (n_rows <= 0 || head_dim <= 0) return;
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_LANES_X86
    case CpuLevel::Avx512Vnni:
      scores_avx512(q, n_keys, n_rows, k, stride, head_dim, scale, s, ld, tile);
      return;
    case CpuLevel::Avx2:
      scores_avx2(q, n_keys, n_rows, k, stride, head_dim, scale, s, ld, tile);
      return;
#endif
    default:
      scores_baseline(q, n_keys, n_rows, k, stride, head_dim, scale, s, ld, tile);
  }
}

void attention_weighted_values(float* const* out, const float* p, int64_t ldp, const float* inv,
                               int64_t n_rows, const float* v, int64_t stride, int64_t n,
                               int64_t head_dim, CpuLevel level) {
  if (head_dim <= 0 || n_rows <= 0) return;
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_LANES_X86
    case CpuLevel::Avx512Vnni:
      values_avx512(out, p, ldp, inv, n_rows, v, stride, n, head_dim);
      return;
    case CpuLevel::Avx2:
      values_avx2(out, p, ldp, inv, n_rows, v, stride, n, head_dim);
      return;
#endif
    default:
      values_baseline(out, p, ldp, inv, n_rows, v, stride, n, head_dim);
  }
}

void attention_value_dots(float* dp, const float* dout, const float* v, int64_t stride, int64_t n,
                          int64_t head_dim, CpuLevel level) {
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_LANES_X86
    case CpuLevel::Avx512Vnni:
      value_dots_avx512(dp, dout, v, stride, n, head_dim);
      return;
    case CpuLevel::Avx2:
      value_dots_avx2(dp, dout, v, stride, n, head_dim);
      return;
#endif
    default:
      value_dots_baseline(dp, dout, v, stride, n, head_dim);
  }
}

void attention_backward_row(float* p, const float* dp, float big_d, float scale, int64_t n,
                            const float* q, const float* dout, float* dq, const float* k, float* dk,
                            float* dv, int64_t stride, int64_t head_dim, CpuLevel level) {
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_LANES_X86
    case CpuLevel::Avx512Vnni:
      backward_row_avx512(p, dp, big_d, scale, n, q, dout, dq, k, dk, dv, stride, head_dim);
      return;
    case CpuLevel::Avx2:
      backward_row_avx2(p, dp, big_d, scale, n, q, dout, dq, k, dk, dv, stride, head_dim);
      return;
#endif
    default:
      backward_row_baseline(p, dp, big_d, scale, n, q, dout, dq, k, dk, dv, stride, head_dim);
  }
}

}  // namespace trit::engine
