// CPU compute kernels for the hot loops: activation quantisation, ternary x int8 matrix
// products (TQ1_0, TQ2_0 and I2_S read in place), and float
// matrix products for the LM head and LoRA (f32, f16, bf16, q8_0, q6_K weights).
//
// Every kernel has a portable scalar version (the reference) and, where it pays, AVX2 and
// AVX-512 VNNI versions chosen at run time. The SIMD versions produce the same bits as the
// scalar one for the ternary kernels (integer accumulation, identical float epilogue).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/weights.h"

namespace trit::engine {

enum class CpuLevel { Scalar = 0, Avx2 = 1, Avx512Vnni = 2 };

std::string_view cpu_level_name(CpuLevel level);
// What the kernels run: active_cpu_level()'s name, "avx2+avx-vnni" where the AVX2 kernels take
// AVX-VNNI (cpu::avx_vnni_enabled).
std::string cpu_kernels_name();
CpuLevel detect_cpu_level();  // what this processor supports
// The level kernels use: detect_cpu_level(), lowered by the environment variable
// TRIT_CPU=scalar|avx2|avx512 (never raised above what the processor supports).
CpuLevel active_cpu_level();
// `detected` lowered by a TRIT_CPU value (nullptr or empty: unchanged; throws trit::Error on
// a value that is not scalar, avx2 or avx512). active_cpu_level() caches this once per process.
CpuLevel apply_cpu_level_override(CpuLevel detected, const char* value);
// The kernels below take a level; one above detect_cpu_level() runs at detect_cpu_level().

// Activations of n_tokens rows of n values quantised per row to int8 (DESIGN section 2):
// scale = 127 / max(max|x|, 1e-5), q = clamp(round_half_even(x * scale), -128, 127).
// sums holds, per row, the sum of q over each run of 128 values (n must be a multiple of 128).
struct QuantizedActs {
  int64_t n_tokens = 0;
  int64_t n = 0;
  std::vector<int8_t> q;      // (n_tokens, n)
  std::vector<float> scale;   // (n_tokens)
  std::vector<int32_t> sums;  // (n_tokens, n / 128)
};
void quantize_acts(const float* x, int64_t n_tokens, int64_t n, QuantizedActs& out,
                   CpuLevel level = active_cpu_level());
// The same in two parts, so that threads can take rows: size `out` for n_tokens rows of n, then
// quantise rows [t0, t1) of x (row 0 at x) into it.
void size_quantized_acts(QuantizedActs& out, int64_t n_tokens, int64_t n);
void quantize_acts_rows(const float* x, int64_t t0, int64_t t1, QuantizedActs& out,
                        CpuLevel level = active_cpu_level());

// y[t * y_stride + r] = (sum_b d_b * sum_{j in b} T[r, j] * q[t, j]) / scale[t] for rows
// r in [r0, r1) and every token t. With a uniform scale: d * (sum_j T[r, j] q[t, j]) / scale[t].
// The integer sums are exact; the float epilogue is the same expression in every version.
void ternary_matmul(const TernaryMatrix& w, const QuantizedActs& x, float* y, int64_t y_stride,
                    int64_t r0, int64_t r1, CpuLevel level = active_cpu_level());

// Float weights (f32, f16, bf16, q8_0 or q6_K rows of n_in): y[t * y_stride + r] =
// sum_k W[r, k] * x[t * n_in + k] for rows r in [r0, r1), with f32 accumulation.
void float_matmul(const FloatMatrix& w, const float* x, int64_t n_tokens, float* y,
                  int64_t y_stride, int64_t r0, int64_t r1, CpuLevel level = active_cpu_level());

// Row r of a float matrix as f32 (embedding lookup).
void float_matrix_row(const FloatMatrix& w, int64_t r, float* out);
// Rows [r0, r1) as f32 into out ((r1 - r0) x n_in), vectorised where the processor allows; the
// same values as float_matrix_row.
void float_matrix_rows(const FloatMatrix& w, int64_t r0, int64_t r1, float* out,
                       CpuLevel level = active_cpu_level());
// Columns [c0, c1) of rows [r0, r1) into out ((r1 - r0) x (c1 - c0)): the same values as
// float_matrix_rows. c0 and c1 lie on the type's block boundaries (c1 = n_in allowed).
void float_matrix_cols(const FloatMatrix& w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                       float* out, CpuLevel level = active_cpu_level());

// IEEE half <-> f32 over n values (round to nearest even; core/half.h's values, vectorised
// where the processor allows): the KV caches of TensorUse::KvCacheF16.
void half_to_float(const uint16_t* src, float* dst, int64_t n, CpuLevel level = active_cpu_level());
void float_to_half(const float* src, uint16_t* dst, int64_t n, CpuLevel level = active_cpu_level());

}  // namespace trit::engine
