// The kernels of kernels_backward.h: the transposed ternary product dx += scale * W^T dy of
// the bitlinear backward pass (a scalar reference and a blocked version), and gemm_f32_acc,
// the f32 product C += A B under both the blocked version and the LoRA matmuls.
//
// Plain C++ that the compiler vectorises (GCC/Clang vector types for the register tile, no
// intrinsics). On x86 the same source is compiled three times, through always-inline
// templates called from functions with a `target` attribute (AVX-512, AVX2, baseline), and
// `level` picks one at run time. Only those functions carry the attribute; everything they
// call is inlined into them or compiled for the baseline, so no AVX code can reach a
// processor without it (see kernels_impl.h).
//
// The transposed product, for a column range [c0, c1):
//   column tiles of 256 (a TQ2_0 block, two I2_S runs)
//     token chunks of 64: acc (64, 256) = 0
//       row blocks of 256: panel (256 rows, 256 columns) = d * T, decoded once
//         acc += dy panel: strips of 16 or 32 columns x groups of TG tokens held in registers
//         while they accumulate over the rows
//     dx[t, c] += scale * acc[t, c]
// Each acc element sums its rows in order 0 .. n_out - 1, as the reference does, with the
// same products dy * (d * T), and the build keeps a*b+c unfused (-ffp-contract=off): the
// results are bit-identical to the reference at every level.
//
// The panel holds the trits T (-1, 0, 1 as floats) and each row's d apart: a token chunk's dy
// is scaled once per row block, dyd = dy * d (rounded as the reference rounds dy * d), and
// since dy * (d * T) equals dyd * T exactly (T = +-1 flips a sign; T = 0 gives the same signed
// zero), acc + dyd * T may be one fused multiply-add (the product needs no rounding) where the
// processor has them: AVX2 and AVX-512 take FMA strips, one instruction a term instead of a
// multiply and an add (a processor that issues both on the same ports, as Intel's do, runs
// the strip up to twice as fast; AMD's separate add pipes gain nothing).
//
// Speed (one core of an AMD EPYC Zen 5, 2560 x 6912 TQ2_0, 128 tokens, CPU time): AVX-512
// 25 ms (91 G multiply-adds/s), AVX2 49 ms, baseline SSE2 105 ms; the int8 forward
// ternary_matmul takes 6 ms on the same shape.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include "backend/cpu/x86_intrinsics.h"
#endif

#include "backend/cpu/kernels_backward.h"
#include "backend/cpu/kernels_impl.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"

#if defined(__GNUC__)
#define TRIT_INLINE inline __attribute__((always_inline))
#else
#define TRIT_INLINE inline
#endif

namespace trit::engine {
namespace {

constexpr int64_t kTile = 256;       // columns per tile
constexpr int64_t kTokenChunk = 64;  // tokens per accumulator tile
constexpr int64_t kRowBlock = 256;   // weight rows per decoded panel

struct View {
  DType type = DType::TQ2_0;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t n_out = 0;
  int64_t row_bytes = 0;
  bool uniform = true;  // one d for every block: I2_S, or TQ2_0 with uniform_scale set
  float d = 0;
  // TQ1_0 blocks turned into TQ2_0 blocks by the AVX2 converter before they are decoded (its
  // digits in vector lanes, not one multiply a digit); null: decode_tq1_0_block.
  void (*tq1_to_tq2)(const uint8_t*, int64_t, int64_t, int, uint8_t*, int64_t) = nullptr;
};

View make_view(const TernaryMatrix& w, const char* op, int64_t c0, int64_t c1) {
  if (w.type != DType::TQ1_0 && w.type != DType::TQ2_0 && w.type != DType::I2_S) {
    fail(op, ": weight type ", dtype_name(w.type), " is not tq1_0, tq2_0 or i2_s");
  }
  const int64_t block = w.type == DType::I2_S ? 128 : 256;
  if (w.n_in <= 0 || w.n_in % block != 0 || w.n_out < 0) {
    fail(op, ": ", dtype_name(w.type), " matrix of ", w.n_out, " rows of ", w.n_in,
         " weights (rows must be a positive multiple of ", block, ")");
  }
  if (c0 < 0 || c1 < c0 || c1 > w.n_in) {
    fail(op, ": columns [", c0, ", ", c1, ") outside the ", w.n_in, " inputs");
  }
  View v;
  v.type = w.type;
  v.data = w.data;
  v.n_in = w.n_in;
  v.n_out = w.n_out;
  v.row_bytes = row_bytes(w.type, w.n_in);
  if (w.type == DType::I2_S) {
    v.d = w.uniform_scale;
    if (v.d == 0.0f && w.data != nullptr) std::memcpy(&v.d, w.data + w.n_out * v.row_bytes, 4);
  } else {
    v.uniform = w.uniform_scale != 0.0f;
    v.d = w.uniform_scale;
  }
  return v;
}

TRIT_INLINE float block_d(const View& w, const uint8_t* blk) {
  if (w.uniform) return w.d;
  uint16_t h;
  std::memcpy(&h, blk + (w.type == DType::TQ1_0 ? kTQ1DOffset : 64), 2);
  return fp16_to_f32(h);
}

// d * T[r, c] for one weight (FORMATS.md), the definition the reference sums.
float weight_at(const View& w, int64_t r, int64_t c) {
  const uint8_t* row = w.data + r * w.row_bytes;
  int code;
  float d;
  if (w.type == DType::TQ1_0) {
    const uint8_t* blk = row + (c / 256) * kTQ1BlockBytes;
    uint8_t codes[256];
    decode_tq1_0_block(blk, codes);
    code = codes[c % 256];
    d = block_d(w, blk);
  } else if (w.type == DType::TQ2_0) {
    const uint8_t* blk = row + (c / 256) * 66;
    const int64_t j = c % 256, h = j / 128, l = (j % 128) / 32, m = j % 32;
    code = (blk[32 * h + m] >> (2 * l)) & 3;
    d = block_d(w, blk);
  } else {
    const int64_t j = c % 128;
    code = (row[(c / 128) * 32 + j % 32] >> (6 - 2 * (j / 32))) & 3;
    d = w.d;
  }
  return d * float(code - 1);
}

// ---- blocked version ----

// Asks for the tile's bytes of rows [r0, r0 + n_rows) ahead of their decoding: one row's block
// lies a row apart from the next (up to 1.5 KB in a 1B model's down projection), so the
// hardware's prefetchers, which stop at page boundaries, leave most of them to miss.
// decode_panel asks for the row kAhead rows on as it decodes each; transposed_impl asks for
// the first rows of the next tile or token chunk.
constexpr int64_t kAhead = 32;
TRIT_INLINE void prefetch_panel(const View& w, int64_t r0, int64_t n_rows, int64_t tile_start) {
  const int64_t at = w.type == DType::TQ1_0   ? (tile_start / 256) * kTQ1BlockBytes
                     : w.type == DType::TQ2_0 ? (tile_start / 256) * 66
                                              : (tile_start / 128) * 32;
  const int64_t len = w.type == DType::TQ1_0 ? kTQ1BlockBytes : w.type == DType::TQ2_0 ? 66 : 64;
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* p = w.data + (r0 + r) * w.row_bytes + at;
    __builtin_prefetch(p, 0, 2);  // into L2: see prefetch_weights in kernels_impl.h
    __builtin_prefetch(p + len - 1, 0, 2);
  }
}

// panel (n_rows, kTile) = T and row_d (n_rows) = d for rows [r0, r0 + n_rows) and the tile's tw
// columns (a tile is one TQ1_0/TQ2_0 block a row, or two I2_S runs under one scale).
TRIT_INLINE void decode_panel(const View& w, int64_t r0, int64_t n_rows, int64_t tile_start,
                              int64_t tw, float* panel, float* row_d) {
  for (int64_t r = 0; r < n_rows; ++r) {
    // The tile's bytes of the row kAhead rows on (into the next panel at the end).
    if (r0 + r + kAhead < w.n_out) prefetch_panel(w, r0 + r + kAhead, 1, tile_start);
    const uint8_t* row = w.data + (r0 + r) * w.row_bytes;
    float* out = panel + r * kTile;  // (kTile)
    uint8_t tq2[66];                 // a TQ1_0 block as TQ2_0 (tq1_to_tq2)
    if (w.type == DType::TQ1_0 && w.tq1_to_tq2 == nullptr) {
      const uint8_t* blk = row + (tile_start / 256) * kTQ1BlockBytes;
      row_d[r] = block_d(w, blk);
      uint8_t codes[256];
      decode_tq1_0_block(blk, codes);
      for (int j = 0; j < 256; ++j) out[j] = float(int(codes[j]) - 1);
    } else if (w.type != DType::I2_S) {  // byte 32h + m holds weights 128h + 32l + m at bits 2l
      const uint8_t* blk = row + (tile_start / 256) * 66;
      if (w.type == DType::TQ1_0) {
        const uint8_t* src = row + (tile_start / 256) * kTQ1BlockBytes;
        row_d[r] = block_d(w, src);
        w.tq1_to_tq2(src, kTQ1BlockBytes, 256, 1, tq2, 66);
        blk = tq2;
      } else {
        row_d[r] = block_d(w, blk);
      }
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 4; ++l) {
          for (int m = 0; m < 32; ++m) {
            out[128 * h + 32 * l + m] = float(((blk[32 * h + m] >> (2 * l)) & 3) - 1);
          }
        }
      }
    } else {  // I2_S: byte m of a run holds weights 32g + m at bits 6 - 2g
      row_d[r] = w.d;
      for (int64_t k = 0; k < tw / 128; ++k) {
        const uint8_t* run = row + (tile_start / 128 + k) * 32;
        for (int g = 0; g < 4; ++g) {
          for (int m = 0; m < 32; ++m) {
            out[128 * k + 32 * g + m] = float(((run[m] >> (6 - 2 * g)) & 3) - 1);
          }
        }
      }
    }
  }
}

// ---- the f32 product C += A B that both kernels run ----

// C[i, j] += sum_k A[i * a_row + k * a_col] * B[k * ldb + j] for TG rows and W columns,
// k in [0, n_k) in order. With GCC/Clang the TG x W tile lives in registers as vectors of
// min(W, L) floats, L the width of the calling function's target (4, 8 or 16); loads and
// stores go through memcpy (unaligned, no aliasing questions).
#if defined(__GNUC__)
template <int L>
struct VecOf {
  typedef float type __attribute__((vector_size(4 * L)));
};

template <int TG, int W, int L>
TRIT_INLINE void micro_tile(int64_t n_k, const float* a, int64_t a_row, int64_t a_col,
                            const float* b, int64_t ldb, float* c, int64_t ldc) {
  constexpr int kL = W < L ? W : L;
  constexpr int kV = W / kL;  // vectors per row of the tile
  using V = typename VecOf<kL>::type;
  V acc[TG][kV];
  for (int i = 0; i < TG; ++i) {
    for (int v = 0; v < kV; ++v) __builtin_memcpy(&acc[i][v], c + i * ldc + v * kL, sizeof(V));
  }
  for (int64_t k = 0; k < n_k; ++k) {
    V w[kV];
    for (int v = 0; v < kV; ++v) __builtin_memcpy(&w[v], b + k * ldb + v * kL, sizeof(V));
    for (int i = 0; i < TG; ++i) {
      const float z = a[i * a_row + k * a_col];
      for (int v = 0; v < kV; ++v) acc[i][v] += z * w[v];
    }
  }
  for (int i = 0; i < TG; ++i) {
    for (int v = 0; v < kV; ++v) __builtin_memcpy(c + i * ldc + v * kL, &acc[i][v], sizeof(V));
  }
}
#else
template <int TG, int W, int L>
TRIT_INLINE void micro_tile(int64_t n_k, const float* a, int64_t a_row, int64_t a_col,
                            const float* b, int64_t ldb, float* c, int64_t ldc) {
  for (int i = 0; i < TG; ++i) {
    for (int j = 0; j < W; ++j) {
      float acc = c[i * ldc + j];
      for (int64_t k = 0; k < n_k; ++k) acc += a[i * a_row + k * a_col] * b[k * ldb + j];
      c[i * ldc + j] = acc;
    }
  }
}
#endif

// Rows [i0, i1) of C: strips of W columns, TG rows at a time, then single rows.
template <int TG, int W, int L>
TRIT_INLINE void gemm_strip(int64_t i0, int64_t i1, int64_t n_k, const float* a, int64_t a_row,
                            int64_t a_col, const float* b, int64_t ldb, float* c, int64_t ldc) {
  int64_t i = i0;
  for (; i + TG <= i1; i += TG) {
    micro_tile<TG, W, L>(n_k, a + i * a_row, a_row, a_col, b, ldb, c + i * ldc, ldc);
  }
  for (; i < i1; ++i)
    micro_tile<1, W, L>(n_k, a + i * a_row, a_row, a_col, b, ldb, c + i * ldc, ldc);
}

// C (rows [i0, i1), n columns) += A (n_k) B, k in chunks of kChunk so that a strip of B stays
// in the first-level cache; every element still sums k in order.
template <int TG, int L, int SW>
TRIT_INLINE void gemm_impl(int64_t i0, int64_t i1, int64_t n, int64_t n_k, const float* a,
                           int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                           int64_t ldc) {
  constexpr int64_t kChunk = 256;
  for (int64_t k0 = 0; k0 < n_k; k0 += kChunk) {
    const int64_t nk = std::min(kChunk, n_k - k0);
    const float* ak = a + k0 * a_col;
    const float* bk = b + k0 * ldb;
    int64_t j = 0;
    for (; j + SW <= n; j += SW)
      gemm_strip<TG, SW, L>(i0, i1, nk, ak, a_row, a_col, bk + j, ldb, c + j, ldc);
    if (SW > 16 && j + 16 <= n) {
      gemm_strip<TG, 16, L>(i0, i1, nk, ak, a_row, a_col, bk + j, ldb, c + j, ldc);
      j += 16;
    }
    if (j + 8 <= n) {
      gemm_strip<TG, 8, L>(i0, i1, nk, ak, a_row, a_col, bk + j, ldb, c + j, ldc);
      j += 8;
    }
    if (j + 4 <= n) {
      gemm_strip<TG, 4, L>(i0, i1, nk, ak, a_row, a_col, bk + j, ldb, c + j, ldc);
      j += 4;
    }
    for (; j < n; ++j) gemm_strip<1, 1, 1>(i0, i1, nk, ak, a_row, a_col, bk + j, ldb, c + j, ldc);
  }
}

// ---- the transposed ternary product ----

// acc (nt, n) += dyd (nt, n_k; rows of kRowBlock) panel (n_k, n; rows of kTile): the generic
// strips (a multiply and an add a term).
template <int TG, int L, int SW>
struct PlainStrips {
  TRIT_INLINE void operator()(int64_t nt, int64_t n, int64_t n_k, const float* dyd,
                              const float* panel, float* acc) const {
    gemm_impl<TG, L, SW>(0, nt, n, n_k, dyd, kRowBlock, 1, panel, kTile, acc, kTile);
  }
};

template <int TG, int L, int SW, class Strips>
TRIT_INLINE void transposed_impl(const View& w, const float* dy, int64_t dy_stride,
                                 int64_t n_tokens, float scale, float* dx, int64_t c0, int64_t c1,
                                 float* acc, float* panel, float* row_d, float* dyd,
                                 const Strips& strips) {
  for (int64_t tile_start = c0 / kTile * kTile; tile_start < c1; tile_start += kTile) {
    const int64_t tw = std::min(kTile, w.n_in - tile_start);
    const int64_t a = std::max(c0, tile_start) - tile_start;  // tile columns [a, b)
    const int64_t b = std::min(c1, tile_start + tw) - tile_start;
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenChunk) {
      const int64_t nt = std::min(kTokenChunk, n_tokens - t0);
      for (int64_t i = 0; i < nt * kTile; ++i) acc[i] = 0.0f;
      for (int64_t r0 = 0; r0 < w.n_out; r0 += kRowBlock) {
        const int64_t nr = std::min(kRowBlock, w.n_out - r0);
        decode_panel(w, r0, nr, tile_start, tw, panel, row_d);
        // After the last row block, the first rows of the next token chunk or tile arrive
        // while this one is summed (decode_panel asks for the rest as it goes).
        if (r0 + kRowBlock >= w.n_out && (t0 + kTokenChunk < n_tokens || tile_start + kTile < c1)) {
          prefetch_panel(w, 0, std::min(kAhead, w.n_out),
                         t0 + kTokenChunk < n_tokens ? tile_start : tile_start + kTile);
        }
        for (int64_t i = 0; i < nt; ++i) {  // dyd (nt, nr) = dy * d, the reference's dy * d
          const float* dyt = dy + (t0 + i) * dy_stride + r0;
          for (int64_t r = 0; r < nr; ++r) dyd[i * kRowBlock + r] = dyt[r] * row_d[r];
        }
        // acc (nt, b - a) += dyd (nt, nr) panel (nr, b - a)
        strips(nt, b - a, nr, dyd, panel + a, acc + a);
      }
      for (int64_t i = 0; i < nt; ++i) {
        float* dxt = dx + (t0 + i) * w.n_in + tile_start;  // (tw)
        const float* at = acc + i * kTile;                 // (kTile)
        for (int64_t j = a; j < b; ++j) dxt[j] += scale * at[j];
      }
    }
  }
}

// ---- one instance per target ----

void transposed_baseline(const View& w, const float* dy, int64_t dy_stride, int64_t n_tokens,
                         float scale, float* dx, int64_t c0, int64_t c1, float* acc, float* panel,
                         float* row_d, float* dyd) {
  transposed_impl<2, 4, 16>(w, dy, dy_stride, n_tokens, scale, dx, c0, c1, acc, panel, row_d, dyd,
                            PlainStrips<2, 4, 16>{});
}

void gemm_baseline(int64_t i0, int64_t i1, int64_t n, int64_t n_k, const float* a, int64_t a_row,
                   int64_t a_col, const float* b, int64_t ldb, float* c, int64_t ldc) {
  gemm_impl<2, 4, 16>(i0, i1, n, n_k, a, a_row, a_col, b, ldb, c, ldc);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define TRIT_TRANSPOSED_X86 1
#define TRIT_TARGET_AVX2 __attribute__((target("avx2")))
#define TRIT_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))
#define TRIT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))

// FMA strips: TG tokens x 2 vectors of columns in registers over the n_k rows, each term
// acc + dyd * T in one fused multiply-add (exact: dyd * T needs no rounding).
template <int TG>
TRIT_TARGET_AVX512 TRIT_INLINE void fma_tile_avx512(int64_t n_k, const float* dyd,
                                                    const float* panel, float* acc) {
  __m512 c[TG][2];
  for (int i = 0; i < TG; ++i) {
    c[i][0] = _mm512_loadu_ps(acc + i * kTile);
    c[i][1] = _mm512_loadu_ps(acc + i * kTile + 16);
  }
  for (int64_t k = 0; k < n_k; ++k) {
    const __m512 w0 = _mm512_loadu_ps(panel + k * kTile);
    const __m512 w1 = _mm512_loadu_ps(panel + k * kTile + 16);
    for (int i = 0; i < TG; ++i) {
      const __m512 z = _mm512_set1_ps(dyd[i * kRowBlock + k]);
      c[i][0] = _mm512_fmadd_ps(z, w0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(z, w1, c[i][1]);
    }
  }
  for (int i = 0; i < TG; ++i) {
    _mm512_storeu_ps(acc + i * kTile, c[i][0]);
    _mm512_storeu_ps(acc + i * kTile + 16, c[i][1]);
  }
}

template <int TG>
TRIT_TARGET_AVX2_FMA TRIT_INLINE void fma_tile_avx2(int64_t n_k, const float* dyd,
                                                    const float* panel, float* acc) {
  __m256 c[TG][2];
  for (int i = 0; i < TG; ++i) {
    c[i][0] = _mm256_loadu_ps(acc + i * kTile);
    c[i][1] = _mm256_loadu_ps(acc + i * kTile + 8);
  }
  for (int64_t k = 0; k < n_k; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * kTile);
    const __m256 w1 = _mm256_loadu_ps(panel + k * kTile + 8);
    for (int i = 0; i < TG; ++i) {
      const __m256 z = _mm256_set1_ps(dyd[i * kRowBlock + k]);
      c[i][0] = _mm256_fmadd_ps(z, w0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(z, w1, c[i][1]);
    }
  }
  for (int i = 0; i < TG; ++i) {
    _mm256_storeu_ps(acc + i * kTile, c[i][0]);
    _mm256_storeu_ps(acc + i * kTile + 8, c[i][1]);
  }
}

// Strips of 32 (AVX-512) or 16 (AVX2) columns through the FMA tiles, TG tokens at a time and
// then one; the columns left over through the plain strips (the same sums). Called, not
// inlined, from transposed_impl: GCC inlines a target's code only into that target's.
struct FmaStripsAvx512 {
  TRIT_TARGET_AVX512 void operator()(int64_t nt, int64_t n, int64_t n_k, const float* dyd,
                                     const float* panel, float* acc) const {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
      int64_t i = 0;
      for (; i + 8 <= nt; i += 8)
        fma_tile_avx512<8>(n_k, dyd + i * kRowBlock, panel + j, acc + i * kTile + j);
      for (; i < nt; ++i)
        fma_tile_avx512<1>(n_k, dyd + i * kRowBlock, panel + j, acc + i * kTile + j);
    }
    if (j < n) PlainStrips<8, 16, 32>{}(nt, n - j, n_k, dyd, panel + j, acc + j);
  }
};

struct FmaStripsAvx2 {
  TRIT_TARGET_AVX2_FMA void operator()(int64_t nt, int64_t n, int64_t n_k, const float* dyd,
                                       const float* panel, float* acc) const {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      int64_t i = 0;
      // Six tokens a tile: twelve sums, two weight vectors and a broadcast fill the sixteen
      // registers (kernels_bench tq2_0_t 2560 x 6912, 64 tokens, --level avx2, AMD Zen 5:
      // 27.4-31.4 -> 23.9-25.8 ms with four).
      for (; i + 6 <= nt; i += 6)
        fma_tile_avx2<6>(n_k, dyd + i * kRowBlock, panel + j, acc + i * kTile + j);
      for (; i + 4 <= nt; i += 4)
        fma_tile_avx2<4>(n_k, dyd + i * kRowBlock, panel + j, acc + i * kTile + j);
      for (; i < nt; ++i)
        fma_tile_avx2<1>(n_k, dyd + i * kRowBlock, panel + j, acc + i * kTile + j);
    }
    if (j < n) PlainStrips<4, 8, 16>{}(nt, n - j, n_k, dyd, panel + j, acc + j);
  }
};

TRIT_TARGET_AVX2_FMA void transposed_avx2(const View& w, const float* dy, int64_t dy_stride,
                                          int64_t n_tokens, float scale, float* dx, int64_t c0,
                                          int64_t c1, float* acc, float* panel, float* row_d,
                                          float* dyd) {
  transposed_impl<4, 8, 16>(w, dy, dy_stride, n_tokens, scale, dx, c0, c1, acc, panel, row_d, dyd,
                            FmaStripsAvx2{});
}

TRIT_TARGET_AVX2 void gemm_avx2(int64_t i0, int64_t i1, int64_t n, int64_t n_k, const float* a,
                                int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                                int64_t ldc) {
  gemm_impl<6, 8, 16>(i0, i1, n, n_k, a, a_row, a_col, b, ldb, c, ldc);
}

TRIT_TARGET_AVX512 void transposed_avx512(const View& w, const float* dy, int64_t dy_stride,
                                          int64_t n_tokens, float scale, float* dx, int64_t c0,
                                          int64_t c1, float* acc, float* panel, float* row_d,
                                          float* dyd) {
  transposed_impl<8, 16, 32>(w, dy, dy_stride, n_tokens, scale, dx, c0, c1, acc, panel, row_d, dyd,
                             FmaStripsAvx512{});
}

TRIT_TARGET_AVX512 void gemm_avx512(int64_t i0, int64_t i1, int64_t n, int64_t n_k, const float* a,
                                    int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
                                    float* c, int64_t ldc) {
  gemm_impl<8, 16, 32>(i0, i1, n, n_k, a, a_row, a_col, b, ldb, c, ldc);
}
#endif

}  // namespace

void ternary_matmul_transposed_ref(const TernaryMatrix& w, const float* dy, int64_t dy_stride,
                                   int64_t n_tokens, float scale, float* dx, int64_t c0,
                                   int64_t c1) {
  const View v = make_view(w, "ternary_matmul_transposed_ref", c0, c1);
  // d * T of the columns, each weight looked up once (not once a token)
  std::vector<float> dense(static_cast<size_t>((c1 - c0) * v.n_out));
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t r = 0; r < v.n_out; ++r)
      dense[size_t((c - c0) * v.n_out + r)] = weight_at(v, r, c);
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* dyt = dy + t * dy_stride;  // (n_out)
    float* dxt = dx + t * v.n_in;           // (n_in)
    for (int64_t c = c0; c < c1; ++c) {
      const float* wc = dense.data() + (c - c0) * v.n_out;
      float acc = 0.0f;
      for (int64_t r = 0; r < v.n_out; ++r) acc += dyt[r] * wc[r];
      dxt[c] += scale * acc;
    }
  }
}

void ternary_matmul_transposed(const TernaryMatrix& w, const float* dy, int64_t dy_stride,
                               int64_t n_tokens, float scale, float* dx, int64_t c0, int64_t c1,
                               CpuLevel level) {
  View v = make_view(w, "ternary_matmul_transposed", c0, c1);
  if (n_tokens <= 0 || c0 == c1) return;
#ifdef TRIT_CPU_X86
  if (v.type == DType::TQ1_0 && std::min(level, detect_cpu_level()) >= CpuLevel::Avx2) {
    v.tq1_to_tq2 = cpu::tq1_to_tq2_rows_avx2;
  }
#endif
  // acc (kTokenChunk, kTile), panel (kRowBlock, kTile), row_d (kRowBlock), dyd (kTokenChunk,
  // kRowBlock)
  thread_local std::vector<float> scratch;
  scratch.resize(size_t((kTokenChunk + kRowBlock) * kTile + kRowBlock + kTokenChunk * kRowBlock));
  float* acc = scratch.data();
  float* panel = acc + kTokenChunk * kTile;
  float* row_d = panel + kRowBlock * kTile;
  float* dyd = row_d + kRowBlock;
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_TRANSPOSED_X86
    case CpuLevel::Avx512Vnni:
      transposed_avx512(v, dy, dy_stride, n_tokens, scale, dx, c0, c1, acc, panel, row_d, dyd);
      return;
    case CpuLevel::Avx2:
      transposed_avx2(v, dy, dy_stride, n_tokens, scale, dx, c0, c1, acc, panel, row_d, dyd);
      return;
#endif
    default:
      transposed_baseline(v, dy, dy_stride, n_tokens, scale, dx, c0, c1, acc, panel, row_d, dyd);
  }
}

void gemm_f32_acc(int64_t i0, int64_t i1, int64_t n, int64_t n_k, const float* a, int64_t a_row,
                  int64_t a_col, const float* b, int64_t ldb, float* c, int64_t ldc,
                  CpuLevel level) {
  if (i1 <= i0 || n <= 0 || n_k <= 0) return;
  switch (std::min(level, detect_cpu_level())) {
#ifdef TRIT_TRANSPOSED_X86
    case CpuLevel::Avx512Vnni:
      gemm_avx512(i0, i1, n, n_k, a, a_row, a_col, b, ldb, c, ldc);
      return;
    case CpuLevel::Avx2:
      gemm_avx2(i0, i1, n, n_k, a, a_row, a_col, b, ldb, c, ldc);
      return;
#endif
    default:
      gemm_baseline(i0, i1, n, n_k, a, a_row, a_col, b, ldb, c, ldc);
  }
}

}  // namespace trit::engine
