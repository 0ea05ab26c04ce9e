// safetensors files built byte by byte for the tests (well-formed and deliberately broken), and
// the little-endian bytes of their tensors.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/half.h"

namespace trit::engine::test {

struct StEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ... (any text, for broken files)
  std::vector<int64_t> shape;
  std::string bytes;
};

inline std::string st_u64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return out;
}

// Length field + header text (padded with spaces to a multiple of 8, as the Python writer does)
// + data.
inline std::string st_raw(const std::string& header, const std::string& data) {
  std::string h = header;
  while (h.size() % 8 != 0) h += ' ';
  return st_u64(h.size()) + h + data;
}

// A well-formed file: entries laid out in order.
inline std::string st_file(const std::vector<StEntry>& entries,
                           const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::string data;
  for (const StEntry& e : entries) {
    const uint64_t begin = data.size();
    data += e.bytes;
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {begin, data.size()}}};
  }
  return st_raw(h.dump(), data);
}

// The bytes of the values as they lie in memory (little-endian on the machines trit runs on).
template <class T>
std::string raw_bytes(const std::vector<T>& v) {
  std::string out(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

inline std::string f32_bytes(const std::vector<float>& v) {
  return raw_bytes(v);
}

inline std::string f16_bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float x : v) h.push_back(f32_to_fp16(x));
  return raw_bytes(h);
}

// bf16 by rounding (f32_to_bf16).
inline std::string bf16_bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float x : v) h.push_back(f32_to_bf16(x));
  return raw_bytes(h);
}

// One value's little-endian bytes, spelled out byte by byte (independent of the above).
inline std::string le_f32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  std::string s;
  for (int i = 0; i < 4; ++i) s += char((u >> (8 * i)) & 0xff);
  return s;
}
inline std::string le_u16(uint16_t u) {
  return std::string{char(u & 0xff), char(u >> 8)};
}

}  // namespace trit::engine::test
