#include "tools/requantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <system_error>

#include "core/error.h"
#include "core/quant.h"
#include "io/file_util.h"
#include "io/gguf.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

constexpr int64_t kChunk = int64_t(1) << 20;  // weights per chunk, a multiple of 256
constexpr float kNoScale = std::numeric_limits<float>::quiet_NaN();

using Emit = std::function<void(const uint8_t*, size_t)>;

float read_i2s_scale(const uint8_t* data, int64_t n) {
  float s;
  std::memcpy(&s, data + n / 4, 4);
  return s;
}

// Trits and per-block scales of weights [w0, w0 + m) of a ternary tensor of n weights.
TernaryUnpacked unpack_chunk_raw(DType type, const uint8_t* data, int64_t n, int64_t w0,
                                 int64_t m) {
  if (type == DType::I2_S) {
    std::vector<uint8_t> tmp(size_t(m / 4 + kI2STail));
    std::memcpy(tmp.data(), data + w0 / 4, size_t(m / 4));
    std::memcpy(tmp.data() + m / 4, data + n / 4, size_t(kI2STail));
    return unpack_ternary(type, tmp.data(), m);
  }
  const int64_t block_bytes = dtype_traits(type).block_bytes;
  return unpack_ternary(type, data + w0 / kQK_K * block_bytes, m);
}

// The same, with errors (such as the unused code 3) prefixed by `where`.
TernaryUnpacked unpack_chunk(DType type, const uint8_t* data, int64_t n, int64_t w0, int64_t m,
                             const std::string& where) {
  try {
    return unpack_chunk_raw(type, data, n, w0, m);
  } catch (const Error& e) {
    fail(where, ": weights ", w0, "..", w0 + m, ": ", e.what());
  }
}

void check_target_fits(DType to, int64_t ne0, const std::string& where) {
  const int64_t block = dtype_traits(to).block_elems;
  if (ne0 % block != 0) {
    fail(where, ": rows of ", ne0, " weights do not fit ", dtype_name(to), " (blocks of ", block,
         ")");
  }
}

// Emits the re-packed bytes in pieces. `known_scale` is the tensor's scale when already found
// (ternary_tensor_scale), else NaN.
void convert(DType from, const uint8_t* data, int64_t n, DType to, const std::string& where,
             const Emit& emit, float known_scale) {
  if (from == to) {
    const uint64_t bytes = *tensor_bytes(from, n, n);
    emit(data, size_t(bytes));
    return;
  }
  float scale = known_scale;
  if (std::isnan(scale) && (to == DType::I2_S || from == DType::I2_S)) {
    scale = ternary_tensor_scale(from, data, n, where);
  }
  std::vector<uint8_t> out;
  std::vector<float> scales;
  std::vector<uint8_t> tail;
  for (int64_t w0 = 0; w0 < n; w0 += kChunk) {
    const int64_t m = std::min(kChunk, n - w0);
    TernaryUnpacked u = unpack_chunk(from, data, n, w0, m, where);
    if (to == DType::I2_S) {
      out.resize(size_t(m / 4 + kI2STail));
      pack_i2_s(u.trits.data(), scale, m, out.data());
      emit(out.data(), size_t(m / 4));
      tail.assign(out.end() - kI2STail, out.end());
      continue;
    }
    const float* block_scales = u.block_scales.data();
    if (from == DType::I2_S) {
      scales.assign(size_t(m / kQK_K), scale);
      block_scales = scales.data();
    }
    out.resize(size_t(m / kQK_K * dtype_traits(to).block_bytes));
    if (to == DType::TQ1_0) {
      pack_tq1_0(u.trits.data(), block_scales, m, out.data());
    } else {
      pack_tq2_0(u.trits.data(), block_scales, m, out.data());
    }
    emit(out.data(), out.size());
  }
  if (to == DType::I2_S) emit(tail.data(), tail.size());
}

}  // namespace

float ternary_tensor_scale(DType type, const uint8_t* data, int64_t n, const std::string& where) {
  if (type == DType::I2_S) return read_i2s_scale(data, n);
  if (type != DType::TQ1_0 && type != DType::TQ2_0) {
    fail(where, ": type ", dtype_name(type), " is not ternary");
  }
  bool have = false;
  float scale = 0;
  int64_t scale_block = 0;
  for (int64_t w0 = 0; w0 < n; w0 += kChunk) {
    const int64_t m = std::min(kChunk, n - w0);
    const TernaryUnpacked u = unpack_chunk(type, data, n, w0, m, where);
    if (w0 == 0 && !u.block_scales.empty()) scale = u.block_scales[0];
    for (int64_t b = 0; b < m / kQK_K; ++b) {
      const int8_t* t = u.trits.data() + b * kQK_K;
      if (std::all_of(t, t + kQK_K, [](int8_t v) { return v == 0; })) continue;
      const float d = u.block_scales[size_t(b)];
      const int64_t block = w0 / kQK_K + b;
      if (!have) {
        have = true;
        scale = d;
        scale_block = block;
      } else if (d != scale) {
        fail(where, ": blocks have different scales (", scale, " in block ", scale_block, ", ", d,
             " in block ", block, "); i2_s holds one scale per tensor");
      }
    }
  }
  return scale;
}

std::vector<uint8_t> requantize_tensor(DType from, const uint8_t* data, int64_t n, DType to,
                                       const std::string& where) {
  if (!dtype_traits(from).ternary || !dtype_traits(to).ternary) {
    fail(where, ": cannot re-pack ", dtype_name(from), " as ", dtype_name(to),
         " (only ternary types)");
  }
  check_target_fits(to, n, where);
  std::vector<uint8_t> out;
  convert(
      from, data, n, to, where,
      [&](const uint8_t* p, size_t k) { out.insert(out.end(), p, p + k); }, kNoScale);
  return out;
}

RequantizeResult requantize_model(const std::string& in_path, const std::string& out_path,
                                  DType type) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!dtype_traits(type).ternary) {
    fail("quantize: type must be tq1_0, tq2_0 or i2_s, not ", dtype_name(type));
  }
  if (same_file(in_path, out_path)) {
    fail(out_path, ": the output must be a different file from the input");
  }
  std::unique_ptr<GgufFile> in = GgufFile::open(in_path);

  GgufWriter w;
  for (const auto& [key, value] : in->metadata()) w.set(key, value);  // keeps the order
  w.set_alignment(uint32_t(in->alignment()));
  w.set_u32("general.file_type", file_type_for(type));

  RequantizeResult r;
  std::vector<DType> out_types;
  std::vector<float> scales;
  for (const GgufTensor& t : in->tensors()) {
    DType to = t.type;
    float scale = kNoScale;
    const int64_t ne0 = t.ne.empty() ? 0 : t.ne[0];
    if (dtype_traits(t.type).ternary && t.type != type) {
      if (ne0 % dtype_traits(type).block_elems != 0) {
        // An I2_S row of 3200 weights (1bitLLM's 3B) has no TQ block layout: it stays I2_S.
        if (r.kept.empty()) r.kept = cat(t.name, ", ", ne0, " weights per row");
        ++r.n_kept;
        ++r.n_copied;
      } else {
        to = type;
        const std::string where = cat(in_path, ": tensor ", t.name);
        check_target_fits(to, ne0, where);
        // Fail before writing anything when I2_S cannot hold the tensor's scales.
        if (to == DType::I2_S) scale = ternary_tensor_scale(t.type, t.data, t.n_elements(), where);
        ++r.n_converted;
      }
    } else {
      ++r.n_copied;
    }
    scales.push_back(scale);
    w.add_tensor(t.name, to, t.ne);
    out_types.push_back(to);
  }

  w.begin(out_path);
  const Emit emit = [&](const uint8_t* p, size_t k) { w.append(p, k); };
  for (size_t i = 0; i < in->tensors().size(); ++i) {
    const GgufTensor& t = in->tensors()[i];
    if (out_types[i] == t.type) {
      w.append(t.data, size_t(t.nbytes));
    } else {
      convert(t.type, t.data, t.n_elements(), out_types[i], cat(in_path, ": tensor ", t.name), emit,
              scales[i]);
    }
  }
  w.finish();

  std::error_code ec;
  r.file_bytes = std::filesystem::file_size(out_path, ec);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace trit::engine
