// CPU kernels: run-time dispatch, CPU detection and the portable scalar reference versions.
// The scalar code is the definition the SIMD files are tested against (bit for bit for
// quantize_acts and ternary_matmul), so it is written for clarity first.
#include "backend/cpu/kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "backend/cpu/kernels_impl.h"
#include "core/bytes.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"

namespace trit::engine {
namespace {

// a * b rounded to float on its own: `acc + product(a, b)` is never fused into an FMA (GCC
// contracts by default in C++ even under -std=c++20), whatever the target, so every version
// of the per-block ternary epilogue rounds the same way.
inline float product(float a, float b) {
  float p = a * b;
#if defined(__GNUC__) && defined(__x86_64__)
  __asm__("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(p));
#else
  volatile float v = p;
  p = v;
#endif
  return p;
}

// ---- activation quantisation ----

// One row: scale = 127 / max(max|x|, 1e-5), q = clamp(round_half_even(x * scale), -128, 127).
// The comparisons are written as the SIMD max/min instructions behave, so NaN inputs give the
// same bytes in every version (a NaN never raises the maximum and quantises to -128).
void quantize_row_scalar(const float* x, int64_t n, int8_t* q, float* scale, int32_t* sums) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a > m ? a : m;
  }
  const float s = 127.0f / (m > 1e-5f ? m : 1e-5f);
  *scale = s;
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] * s;
    v = v > -128.0f ? v : -128.0f;
    v = v < 127.0f ? v : 127.0f;
    q[i] = static_cast<int8_t>(std::nearbyint(v));
  }
  for (int64_t run = 0; run * 128 < n; ++run) {
    int32_t sum = 0;
    for (int64_t i = run * 128; i < std::min(n, run * 128 + 128); ++i) sum += q[i];
    sums[run] = sum;
  }
}

// ---- ternary weights ----

// Codes c in {0, 1, 2} (3 never appears in valid data; it decodes as c - 1 = 2 everywhere).
// Writes the n_in trits of one row.
void decode_ternary_row(const cpu::TernaryView& w, const uint8_t* row, int8_t* t) {
  if (w.type == DType::TQ1_0) {
    uint8_t codes[kQK_K];
    for (int64_t b = 0; b < w.n_in / kQK_K; ++b) {
      decode_tq1_0_block(row + b * kTQ1BlockBytes, codes);
      for (int j = 0; j < kQK_K; ++j) t[b * kQK_K + j] = static_cast<int8_t>(codes[j] - 1);
    }
  } else if (w.type == DType::TQ2_0) {
    // Byte 32h + m of a block holds weights 128h + 32l + m at bits 2l.
    for (int64_t b = 0; b < w.n_in / kQK_K; ++b) {
      const uint8_t* qs = row + b * 66;
      int8_t* out = t + b * 256;
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 4; ++l) {
          for (int m = 0; m < 32; ++m) {
            out[128 * h + 32 * l + m] = static_cast<int8_t>(((qs[32 * h + m] >> (2 * l)) & 3) - 1);
          }
        }
      }
    }
  } else {  // I2_S: byte m of a run holds weights 32g + m at bits 6 - 2g
    for (int64_t k = 0; k < w.n_in / kI2SRun; ++k) {
      const uint8_t* run = row + k * 32;
      int8_t* out = t + k * 128;
      for (int g = 0; g < 4; ++g) {
        for (int m = 0; m < 32; ++m) {
          out[32 * g + m] = static_cast<int8_t>(((run[m] >> (6 - 2 * g)) & 3) - 1);
        }
      }
    }
  }
}

void ternary_matmul_scalar(const cpu::TernaryView& w, const cpu::ActsView& x, float* y,
                           int64_t y_stride, int64_t r0, int64_t r1) {
  thread_local std::vector<int8_t> trits;
  trits.resize(size_t(w.n_in));
  const int64_t n = w.n_in;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    decode_ternary_row(w, row, trits.data());
    for (int64_t t = 0; t < x.n_tokens; ++t) {
      const int8_t* q = x.q + t * n;
      float out;
      if (w.uniform) {
        int32_t total = 0;
        for (int64_t k = 0; k < n; k += 128) {  // fixed-length inner loops vectorise at -O2
          const int8_t* tk = trits.data() + k;
          const int8_t* qk = q + k;
          int32_t sum = 0;
          for (int j = 0; j < 128; ++j) sum += int32_t(tk[j]) * qk[j];
          total += sum;
        }
        out = w.d * float(total) / x.scale[t];
      } else {  // TQ1_0 or TQ2_0 with per-block scales, summed in block order
        const bool tq1 = w.type == DType::TQ1_0;
        const int64_t block_bytes = tq1 ? kTQ1BlockBytes : 66, d_at = tq1 ? kTQ1DOffset : 64;
        float acc = 0.0f;
        for (int64_t b = 0; b < n / kQK_K; ++b) {
          const int8_t* tb = trits.data() + b * 256;
          const int8_t* qb = q + b * 256;
          int32_t dot = 0;
          for (int j = 0; j < 256; ++j) dot += int32_t(tb[j]) * qb[j];
          const float d = fp16_to_f32(load_u16(row + b * block_bytes + d_at));
          acc += product(d, float(dot));
        }
        out = acc / x.scale[t];
      }
      y[t * y_stride + r] = out;
    }
  }
}

// ---- float weights ----

void dequantize_row_scalar(DType type, const uint8_t* row, int64_t n, float* out) {
  switch (type) {
    case DType::F32:
      std::memcpy(out, row, size_t(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(load_u16(row + 2 * i));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load_u16(row + 2 * i));
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < n / kQK8_0; ++b) {
        const uint8_t* blk = row + b * 34;
        const float d = fp16_to_f32(load_u16(blk));
        for (int i = 0; i < 32; ++i) out[b * 32 + i] = d * float(int8_t(blk[2 + i]));
      }
      return;
    case DType::Q6_K:
      for (int64_t b = 0; b < n / kQK_K; ++b) {
        const uint8_t* blk = row + b * 210;
        const uint8_t* ql = blk;
        const uint8_t* qh = blk + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const float d = fp16_to_f32(load_u16(blk + 208));
        for (int e = 0; e < 256; ++e) {
          const int h = e / 128, r = e % 128;
          const uint8_t lb = ql[64 * h + r % 64];
          const int lo = r < 64 ? (lb & 0xF) : (lb >> 4);
          const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
          const int q = (lo | (hi << 4)) - 32;
          out[b * 256 + e] = d * float(sc[e / 16]) * float(q);
        }
      }
      return;
    default:
      fail("float_matmul: unsupported weight type ", dtype_name(type));
  }
}

void float_matmul_scalar(const cpu::FloatView& w, const float* x, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t r0, int64_t r1) {
  const int64_t n = w.n_in;
  thread_local std::vector<float> buf;
  buf.resize(size_t(n));
  for (int64_t r = r0; r < r1; ++r) {
    dequantize_row_scalar(w.type, w.data + r * w.row_bytes, n, buf.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * n;
      float acc = 0.0f;
      for (int64_t k = 0; k < n; ++k) acc += buf[size_t(k)] * xt[k];
      y[t * y_stride + r] = acc;
    }
  }
}

// ---- dispatch helpers ----

// The types the float kernels read.
bool float_kernel_type(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8_0 ||
         t == DType::Q6_K;
}

CpuLevel usable(CpuLevel level) {
  return std::min(level, detect_cpu_level());
}

cpu::TernaryView ternary_view(const TernaryMatrix& w) {
  if (w.type != DType::TQ1_0 && w.type != DType::TQ2_0 && w.type != DType::I2_S) {
    fail("ternary_matmul: weight type ", dtype_name(w.type), " is not tq1_0, tq2_0 or i2_s");
  }
  const int64_t block = w.type == DType::I2_S ? kI2SRun : kQK_K;
  if (w.n_in <= 0 || w.n_in % block != 0) {
    fail("ternary_matmul: ", dtype_name(w.type), " rows of ", w.n_in,
         " weights (must be a positive multiple of ", block, ")");
  }
  cpu::TernaryView v;
  v.type = w.type;
  v.data = w.data;
  v.n_in = w.n_in;
  v.row_bytes = row_bytes(w.type, w.n_in);
  if (w.type == DType::I2_S) {
    v.uniform = true;
    v.d = w.uniform_scale;
    if (v.d == 0.0f && w.data != nullptr) {
      std::memcpy(&v.d, w.data + w.n_out * v.row_bytes, 4);
    }
  } else {
    v.uniform = w.uniform_scale != 0.0f;
    v.d = w.uniform_scale;
  }
  return v;
}

void check_rows(const char* op, int64_t r0, int64_t r1, int64_t n_out) {
  if (r0 < 0 || r1 < r0 || r1 > n_out) {
    fail(op, ": rows [", r0, ", ", r1, ") outside the matrix of ", n_out, " rows");
  }
}

}  // namespace

// ---- CPU levels ----

std::string_view cpu_level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::Scalar:
      return "scalar";
    case CpuLevel::Avx2:
      return "avx2";
    case CpuLevel::Avx512Vnni:
      return "avx512";
  }
  return "unknown";
}

std::string cpu_kernels_name() {
  const CpuLevel level = active_cpu_level();
  std::string name(cpu_level_name(level));
  if (level == CpuLevel::Avx2 && cpu::avx_vnni_enabled()) name += "+avx-vnni";
  return name;
}

CpuLevel detect_cpu_level() {
  static const CpuLevel level = [] {
#if defined(TRIT_CPU_X86) && defined(__GNUC__)
    __builtin_cpu_init();
    const bool avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    if (avx512) return CpuLevel::Avx512Vnni;
    if (avx2) return CpuLevel::Avx2;
#endif
    return CpuLevel::Scalar;
  }();
  return level;
}

CpuLevel apply_cpu_level_override(CpuLevel detected, const char* value) {
  if (value == nullptr || *value == '\0') return detected;
  const std::string_view v(value);
  CpuLevel wanted;
  if (v == "scalar") {
    wanted = CpuLevel::Scalar;
  } else if (v == "avx2") {
    wanted = CpuLevel::Avx2;
  } else if (v == "avx512") {
    wanted = CpuLevel::Avx512Vnni;
  } else {
    fail("TRIT_CPU: unknown level '", v, "' (use scalar, avx2 or avx512)");
  }
  return std::min(wanted, detected);
}

CpuLevel active_cpu_level() {
  static const CpuLevel level =
      apply_cpu_level_override(detect_cpu_level(), std::getenv("TRIT_CPU"));
  return level;
}

// ---- scratch ----

namespace {

// A thread's growing buffer, 64-byte aligned.
struct ScratchBuffer {
  void* p = nullptr;
  size_t cap = 0;
  ~ScratchBuffer() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > cap) {
      std::free(p);
      cap = 0;
      const size_t rounded = (bytes + 63) / 64 * 64;
      p = std::aligned_alloc(64, rounded);
      if (p == nullptr) fail("cpu kernels: out of memory for ", rounded, " bytes of scratch");
      cap = rounded;
    }
    return p;
  }
};

}  // namespace

float* cpu::float_scratch(int64_t floats) {
  thread_local ScratchBuffer buf;
  return static_cast<float*>(buf.get(size_t(floats) * 4));
}

uint8_t* cpu::ternary_scratch(int64_t bytes) {
  thread_local ScratchBuffer buf;
  return static_cast<uint8_t*>(buf.get(size_t(bytes)));
}

namespace {

bool cpu_has_vbmi() {
#if defined(TRIT_CPU_X86) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

std::atomic<bool> g_tq1_tables{[] {
  const char* e = std::getenv("TRIT_CPU_TQ1_TABLES");
  return cpu_has_vbmi() && !(e && std::string_view(e) == "0");
}()};

// AVX-VNNI where the AVX2 kernels run (cpu_features.h reads CPUID).
bool avx_vnni_usable() {
  return detect_cpu_level() >= CpuLevel::Avx2 && cpu_has_avx_vnni();
}

std::atomic<bool> g_avx_vnni{[] {
  const char* e = std::getenv("TRIT_CPU_AVX_VNNI");
  return avx_vnni_usable() && !(e && std::string_view(e) == "0");
}()};

}  // namespace

bool cpu::avx_vnni_enabled() {
  return g_avx_vnni.load(std::memory_order_relaxed);
}

void cpu::set_avx_vnni(bool on) {
  g_avx_vnni.store(on && avx_vnni_usable());
}

bool cpu::tq1_tables_enabled() {
  return g_tq1_tables.load(std::memory_order_relaxed);
}

void cpu::set_tq1_tables(bool on) {
  g_tq1_tables.store(on && cpu_has_vbmi());
}

// ---- public kernels ----

void size_quantized_acts(QuantizedActs& out, int64_t n_tokens, int64_t n) {
  if (n_tokens < 0 || n <= 0) fail("quantize_acts: bad shape ", n_tokens, " x ", n);
  out.n_tokens = n_tokens;
  out.n = n;
  out.q.resize(size_t(n_tokens * n));
  out.scale.resize(size_t(n_tokens));
  out.sums.resize(size_t(n_tokens * ((n + 127) / 128)));
}

void quantize_acts_rows(const float* x, int64_t t0, int64_t t1, QuantizedActs& out,
                        CpuLevel level) {
  const int64_t n = out.n, runs = (n + 127) / 128;
  if (t0 < 0 || t1 > out.n_tokens || t0 > t1) {
    fail("quantize_acts: rows ", t0, "..", t1, " of ", out.n_tokens);
  }
  if (t0 == t1) return;
  const cpu::ActsOut o{out.q.data() + t0 * n, out.scale.data() + t0, out.sums.data() + t0 * runs};
  const float* xr = x + t0 * n;
  const int64_t rows = t1 - t0;
  switch (usable(level)) {
#ifdef TRIT_CPU_X86
    case CpuLevel::Avx512Vnni:
      cpu::quantize_acts_avx512(xr, rows, n, o);
      return;
    case CpuLevel::Avx2:
      cpu::quantize_acts_avx2(xr, rows, n, o);
      return;
#endif
    default:
      for (int64_t t = 0; t < rows; ++t) {
        quantize_row_scalar(xr + t * n, n, o.q + t * n, o.scale + t, o.sums + t * runs);
      }
  }
}

void quantize_acts(const float* x, int64_t n_tokens, int64_t n, QuantizedActs& out,
                   CpuLevel level) {
  size_quantized_acts(out, n_tokens, n);
  quantize_acts_rows(x, 0, n_tokens, out, level);
}

void ternary_matmul(const TernaryMatrix& w, const QuantizedActs& x, float* y, int64_t y_stride,
                    int64_t r0, int64_t r1, CpuLevel level) {
  const cpu::TernaryView v = ternary_view(w);
  check_rows("ternary_matmul", r0, r1, w.n_out);
  if (x.n != w.n_in) {
    fail("ternary_matmul: activations of ", x.n, " values for rows of ", w.n_in, " weights");
  }
  if (x.n_tokens == 0 || r0 == r1) return;
  const int64_t runs = (x.n + 127) / 128;
  thread_local std::vector<int32_t> totals;
  totals.resize(size_t(x.n_tokens));
  for (int64_t t = 0; t < x.n_tokens; ++t) {
    int32_t sum = 0;
    for (int64_t k = 0; k < runs; ++k) sum += x.sums[size_t(t * runs + k)];
    totals[size_t(t)] = sum;
  }
  const cpu::ActsView a{x.n_tokens, x.n, x.q.data(), x.scale.data(), x.sums.data(), totals.data()};
  switch (usable(level)) {
#ifdef TRIT_CPU_X86
    case CpuLevel::Avx512Vnni:
      cpu::ternary_matmul_avx512(v, a, y, y_stride, r0, r1);
      return;
    case CpuLevel::Avx2:
      cpu::ternary_matmul_avx2(v, a, y, y_stride, r0, r1);
      return;
#endif
    default:
      ternary_matmul_scalar(v, a, y, y_stride, r0, r1);
  }
}

void float_matmul(const FloatMatrix& w, const float* x, int64_t n_tokens, float* y,
                  int64_t y_stride, int64_t r0, int64_t r1, CpuLevel level) {
  if (!float_kernel_type(w.type))
    fail("float_matmul: unsupported weight type ", dtype_name(w.type));
  const int64_t block = dtype_traits(w.type).block_elems;
  if (w.n_in <= 0 || w.n_in % block != 0) {
    fail("float_matmul: ", dtype_name(w.type), " rows of ", w.n_in,
         " weights (must be a positive multiple of ", block, ")");
  }
  check_rows("float_matmul", r0, r1, w.n_out);
  if (n_tokens <= 0 || r0 == r1) return;
  const cpu::FloatView v{w.type, w.data, w.n_in, row_bytes(w.type, w.n_in)};
  switch (usable(level)) {
#ifdef TRIT_CPU_X86
    case CpuLevel::Avx512Vnni:
      cpu::float_matmul_avx512(v, x, n_tokens, y, y_stride, r0, r1);
      return;
    case CpuLevel::Avx2:
      cpu::float_matmul_avx2(v, x, n_tokens, y, y_stride, r0, r1);
      return;
#endif
    default:
      float_matmul_scalar(v, x, n_tokens, y, y_stride, r0, r1);
  }
}

void float_matrix_row(const FloatMatrix& w, int64_t r, float* out) {
  if (r < 0 || r >= w.n_out) {
    fail("float_matrix_row: row ", r, " outside the matrix of ", w.n_out, " rows");
  }
  const int64_t block = dtype_traits(w.type).block_elems;
  if (w.n_in <= 0 || w.n_in % block != 0) {
    fail("float_matrix_row: ", dtype_name(w.type), " rows of ", w.n_in, " values");
  }
  dequantize_row_scalar(w.type, w.data + r * row_bytes(w.type, w.n_in), w.n_in, out);
}

void float_matrix_rows(const FloatMatrix& w, int64_t r0, int64_t r1, float* out, CpuLevel level) {
  float_matrix_cols(w, r0, r1, 0, w.n_in, out, level);
}

void float_matrix_cols(const FloatMatrix& w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                       float* out, CpuLevel level) {
  check_rows("float_matrix_cols", r0, r1, w.n_out);
  const DTypeTraits& tr = dtype_traits(w.type);
  const int64_t block = tr.block_elems;
  if (w.n_in <= 0 || w.n_in % block != 0) {
    fail("float_matrix_cols: ", dtype_name(w.type), " rows of ", w.n_in, " values");
  }
  if (c0 < 0 || c0 >= c1 || c1 > w.n_in || c0 % block != 0 || (c1 - c0) % block != 0) {
    fail("float_matrix_cols: columns [", c0, ", ", c1, ") of ", dtype_name(w.type), " rows of ",
         w.n_in, " values (whole blocks of ", block, ")");
  }
  // The columns as rows of their own: their first block, their width, the whole row's stride.
  const cpu::FloatView v{w.type, w.data + c0 / block * tr.block_bytes, c1 - c0,
                         row_bytes(w.type, w.n_in)};
  switch (usable(level)) {
#ifdef TRIT_CPU_X86
    case CpuLevel::Avx512Vnni:
    case CpuLevel::Avx2:
      if (float_kernel_type(w.type)) {
        cpu::float_decode_rows_avx2(v, r0, r1, out);
        return;
      }
      [[fallthrough]];
#endif
    default:
      for (int64_t r = r0; r < r1; ++r) {
        dequantize_row_scalar(w.type, v.data + r * v.row_bytes, v.n_in, out + (r - r0) * v.n_in);
      }
  }
}

void half_to_float(const uint16_t* src, float* dst, int64_t n, CpuLevel level) {
#ifdef TRIT_CPU_X86
  if (usable(level) != CpuLevel::Scalar) {
    cpu::half_to_float_avx2(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(src[i]);
}

void float_to_half(const float* src, uint16_t* dst, int64_t n, CpuLevel level) {
#ifdef TRIT_CPU_X86
  if (usable(level) != CpuLevel::Scalar) {
    cpu::float_to_half_avx2(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_fp16(src[i]);
}

}  // namespace trit::engine
