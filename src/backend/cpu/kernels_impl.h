// Internal declarations shared by the CPU kernel files: kernels.cpp (dispatch, scalar
// reference, CPU detection), kernels_avx2.cpp and kernels_avx512.cpp.
//
// The SIMD files are compiled with -mavx2 / -mavx512* flags. Any inline function or template
// they instantiate that another file also instantiates could be merged by the linker and
// reach a processor without those instructions, so the SIMD entry points below take plain
// pointers (no std::vector, no shared inline helpers): each SIMD file keeps its helpers in an
// anonymous namespace, and kernels.cpp owns every allocation.
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace trit::engine::cpu {

// QuantizedActs as plain pointers (see kernels.h): q (n_tokens, n), scale (n_tokens),
// sums (n_tokens, runs) where runs = ceil(n / 128), and per-token totals computed by the
// dispatcher.
struct ActsView {
  int64_t n_tokens = 0;
  int64_t n = 0;
  const int8_t* q = nullptr;
  const float* scale = nullptr;
  const int32_t* sums = nullptr;
  const int32_t* total = nullptr;  // (n_tokens) sum of q over the whole row
};

struct ActsOut {
  int8_t* q = nullptr;
  float* scale = nullptr;
  int32_t* sums = nullptr;
};

// A ternary matrix ready for the kernels: the row pitch and, when `uniform` is true, the one
// scale d that multiplies every block (I2_S always; TQ2_0 when ternary_uniform_scale found it).
struct TernaryView {
  DType type = DType::TQ2_0;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t row_bytes = 0;
  bool uniform = true;
  float d = 0;
};

struct FloatView {
  DType type = DType::F32;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t row_bytes = 0;
};

// Scratch memory of a float kernel: at least `floats` floats, 64-byte aligned, owned by the
// caller's thread (kernels.cpp keeps one buffer per thread).
float* float_scratch(int64_t floats);
// The same for the ternary kernels (TQ1_0 rows decoded for many tokens, activations in TQ1_0's
// digit order for few).
uint8_t* ternary_scratch(int64_t bytes);

// Whether the AVX-512 kernels look TQ1_0's digits up in tables (AVX-512 VBMI's byte
// permutations) instead of computing them: where the processor has VBMI and TRIT_CPU_TQ1_TABLES
// is not 0. set_tq1_tables turns it off (or back on where VBMI is) for tests of both paths.
bool tq1_tables_enabled();
void set_tq1_tables(bool on);

// Whether the AVX2 ternary kernels take AVX-VNNI's vpdpbusd (VEX-encoded, 256 bits: Intel
// from Alder Lake, AMD from Zen 5; processors with AVX2 but not AVX-512 are where it matters)
// where the processor has it and TRIT_CPU_AVX_VNNI is not 0. Integer sums: the same results
// either way. set_avx_vnni turns it off (or back on where the processor has it) for tests.
bool avx_vnni_enabled();
void set_avx_vnni(bool on);

// Software prefetch of weight streams: the same offset in a row that many bytes (whole rows)
// ahead. A tile reads several rows side by side, which the hardware prefetchers follow poorly
// (bench/kernels_bench: plateau from 12 KB on).
inline int64_t prefetch_distance(int64_t row_bytes) {
  constexpr int64_t kBytes = 16384;
  return (kBytes + row_bytes - 1) / row_bytes * row_bytes;
}
// Rows a block of the many-token ternary products: about 64 KB of weights, whole tiles of
// `tile` rows. Each group of four tokens runs over a block's rows before the next group, so the
// group's activations (4 n_in bytes) stay in L1 across the block instead of coming again from
// L2 for every tile (kernels_bench, 6912 x 2560 on AMD Zen 5, 16 tokens: 1.14 -> 0.78 ms).
inline int64_t block_rows(int64_t row_bytes, int64_t tile) {
  const int64_t rows = 65536 / row_bytes / tile * tile;
  return rows > tile ? rows : tile;
}

// Into L2, not L1: a prefetch to L1 holds one of L1's few miss buffers until its line arrives,
// which capped one thread's stream at 10 GB/s on AMD Zen 4 (26 GB/s into L2, as fast as a
// plain read of memory; bench/kernels_bench, 2560 x 6912 matrix-vector). Locality 2 is
// prefetcht1 (the L2) in GCC and Clang.
inline void prefetch_weights(const void* p) {
  __builtin_prefetch(p, 0, 2);
}

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define TRIT_CPU_X86 1

void quantize_acts_avx2(const float* x, int64_t n_tokens, int64_t n, ActsOut out);
void ternary_matmul_avx2(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride,
                         int64_t r0, int64_t r1);
void float_matmul_avx2(const FloatView& w, const float* x, int64_t n_tokens, float* y,
                       int64_t y_stride, int64_t r0, int64_t r1);
// Rows [r0, r1) as f32, one after another (the AVX-512 level uses it too).
void float_decode_rows_avx2(const FloatView& w, int64_t r0, int64_t r1, float* out);

// `rows` TQ1_0 rows of n_in weights (pitch src_pitch) as TQ2_0 rows (pitch dst_pitch): the
// same codes and block scales (the AVX-512 level uses it too).
void tq1_to_tq2_rows_avx2(const uint8_t* src, int64_t src_pitch, int64_t n_in, int rows,
                          uint8_t* dst, int64_t dst_pitch);

// IEEE half <-> f32 over n values (round to nearest even), as core/half.h converts them.
void half_to_float_avx2(const uint16_t* src, float* dst, int64_t n);
void float_to_half_avx2(const float* src, uint16_t* dst, int64_t n);

void quantize_acts_avx512(const float* x, int64_t n_tokens, int64_t n, ActsOut out);
void ternary_matmul_avx512(const TernaryView& w, const ActsView& x, float* y, int64_t y_stride,
                           int64_t r0, int64_t r1);
void float_matmul_avx512(const FloatView& w, const float* x, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t r0, int64_t r1);
#endif

}  // namespace trit::engine::cpu
