// Float formats (F32, F16, BF16, Q8_0, Q6_K) and the per-type dispatch of dequantize and
// quantize (byte layouts: FORMATS.md, "Block layouts").
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/bytes.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"

namespace trit::engine {
namespace {

constexpr int64_t kQ8Bytes = 34;   // fp16 d, int8 qs[32]
constexpr int64_t kQ6Bytes = 210;  // ql[128], qh[64], int8 scales[16], fp16 d at 208
constexpr float kGroupMaxEps = 1e-15f;

inline int nearest_int(float x) {
  return int(std::nearbyint(x));
}

void check_finite_block(const char* type, const float* x, int64_t count, int64_t block) {
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(x[i])) fail("quantize: ", type, " block ", block, " holds ", x[i]);
  }
}

// ---- Q8_0 ----------------------------------------------------------------------------------

void dequantize_q8_0(const uint8_t* data, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQK8_0; ++b) {
    const uint8_t* in = data + b * kQ8Bytes;
    const float d = fp16_to_f32(load_u16(in));
    const int8_t* q = reinterpret_cast<const int8_t*>(in + 2);
    for (int64_t j = 0; j < kQK8_0; ++j) out[b * kQK8_0 + j] = float(q[j]) * d;
  }
}

// As llama.cpp's reference: d = amax / 127 stored as fp16, q = round(x / d) (half away from
// zero) computed with the f32 d.
void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQK8_0; ++b) {
    const float* xb = x + b * kQK8_0;
    uint8_t* o = out + b * kQ8Bytes;
    check_finite_block("q8_0", xb, kQK8_0, b);
    float amax = 0.0f;
    for (int64_t j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(o, f32_to_fp16(d));
    for (int64_t j = 0; j < kQK8_0; ++j) o[2 + j] = uint8_t(int8_t(std::round(xb[j] * id)));
  }
}

// ---- Q6_K ----------------------------------------------------------------------------------

void dequantize_q6_k(const uint8_t* data, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const uint8_t* ql = data + b * kQ6Bytes;
    const uint8_t* qh = ql + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(ql + 192);
    const float d = fp16_to_f32(load_u16(ql + 208));
    float* o = out + b * kQK_K;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128;
      const int r = e % 128;
      const uint8_t lb = ql[64 * h + r % 64];
      const int low = r < 64 ? (lb & 0xf) : (lb >> 4);
      const int high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      o[e] = d * float(sc[e / 16]) * float((low | (high << 4)) - 32);
    }
  }
}

// llama.cpp's make_qx_quants with rmse_type 1 (weights x^2) and no importance: the scale of
// n values on levels -nmax..nmax-1, trying 19 nearby inverse scales; L gets level + nmax.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0.0f;
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, int8_t(0));
    return 0.0f;
  }
  const float lo = float(-nmax);
  const float hi = float(nmax - 1);
  auto level = [&](float iscale, float v) { return nearest_int(std::clamp(iscale * v, lo, hi)); };
  float iscale = -float(nmax) / max;
  float sumlx = 0.0f;
  float suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, x[i]);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumlx = suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = level(iscale, x[i]);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
    if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = int8_t(level(iscale, x[i]) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// The logic of llama.cpp's quantize_row_q6_K_ref: a scale per 16 weights by make_qx_quants,
// the 16 scales as int8 of one fp16 super-scale, then the levels again with the stored scales.
void quantize_q6_k(const float* x, int64_t n, uint8_t* out) {
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* xb = x + b * kQK_K;
    uint8_t* ql = out + b * kQ6Bytes;
    uint8_t* qh = ql + 128;
    int8_t* sc = reinterpret_cast<int8_t*>(ql + 192);
    check_finite_block("q6_K", xb, kQK_K, b);

    float max_scale = 0.0f;
    float max_abs_scale = 0.0f;
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      scales[ib] = make_qx_quants(16, 32, xb + 16 * ib, L + 16 * ib);
      if (std::fabs(scales[ib]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    std::memset(ql, 0, size_t(kQ6Bytes));
    if (max_abs_scale < kGroupMaxEps) continue;  // all zero: d = 0

    const float iscale = -128.0f / max_scale;
    const uint16_t d16 = f32_to_fp16(1.0f / iscale);
    store_u16(ql + 208, d16);
    const float d_super = fp16_to_f32(d16);
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      sc[ib] = int8_t(std::min(127, nearest_int(std::clamp(iscale * scales[ib], -128.f, 127.f))));
    }
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      const float d = d_super * float(sc[ib]);
      if (d == 0.0f) continue;
      for (int k = 0; k < 16; ++k) {
        const int l = nearest_int(std::clamp(xb[16 * ib + k] / d, -32.0f, 31.0f));
        L[16 * ib + k] = int8_t(l + 32);
      }
    }
    // Weight e: h = e / 128, r = e % 128; low nibble in ql[64h + r % 64] (high nibble when
    // r >= 64), two high bits in qh[32h + r % 32] at shift 2 (r / 32).
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128;
      const int r = e % 128;
      const uint8_t q = uint8_t(L[e]);
      ql[64 * h + r % 64] |= uint8_t((q & 0xf) << (r < 64 ? 0 : 4));
      qh[32 * h + r % 32] |= uint8_t((q >> 4) << (2 * (r / 32)));
    }
  }
}

void dequantize_impl(const char* op, DType type, const uint8_t* data, int64_t n, float* out) {
  check_block_count(op, type, n);
  if (n == 0) return;
  switch (type) {
    case DType::F32:
      std::memcpy(out, data, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(load_u16(data + 2 * i));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load_u16(data + 2 * i));
      break;
    case DType::Q8_0:
      dequantize_q8_0(data, n, out);
      break;
    case DType::Q6_K:
      dequantize_q6_k(data, n, out);
      break;
    case DType::TQ1_0:
      dequantize_tq1_0(data, n, out);
      break;
    case DType::TQ2_0:
      dequantize_tq2_0(data, n, out);
      break;
    case DType::I2_S:
      dequantize_i2_s(data, n, out);
      break;
  }
}

}  // namespace

void dequantize(DType type, const uint8_t* data, int64_t n, float* out) {
  dequantize_impl("dequantize", type, data, n, out);
}

void dequantize_row(DType type, const uint8_t* row, int64_t n, float* out) {
  if (type == DType::I2_S) {
    fail("dequantize_row: i2_s has one scale per tensor, in its tail; dequantize the whole tensor");
  }
  dequantize_impl("dequantize_row", type, row, n, out);
}

std::vector<uint8_t> quantize(DType type, const float* x, int64_t n) {
  check_block_count("quantize", type, n);
  const DTypeTraits& tr = dtype_traits(type);
  if (tr.ternary) {
    std::vector<int8_t> trits(static_cast<size_t>(n));
    const float scale = absmean_ternarize(x, n, trits.data());
    return pack_ternary(type, trits.data(), n, scale);
  }
  std::vector<uint8_t> out(size_t(n / tr.block_elems * tr.block_bytes));
  if (n == 0) return out;
  uint8_t* o = out.data();
  switch (type) {
    case DType::F32:
      std::memcpy(o, x, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(o + 2 * i, f32_to_fp16(x[i]));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(o + 2 * i, f32_to_bf16(x[i]));
      break;
    case DType::Q8_0:
      quantize_q8_0(x, n, o);
      break;
    case DType::Q6_K:
      quantize_q6_k(x, n, o);
      break;
    default:
      break;
  }
  return out;
}

}  // namespace trit::engine
