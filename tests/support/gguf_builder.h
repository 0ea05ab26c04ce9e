// GGUF files assembled byte by byte for the tests, independent of GgufWriter (well-formed and
// deliberately broken).
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>

namespace trit::engine::test {

// Little-endian bytes of a GGUF file.
struct GgufBytes {
  std::string b;
  GgufBytes& u8(uint8_t v) {
    b.push_back(char(v));
    return *this;
  }
  GgufBytes& u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(char((v >> (8 * i)) & 0xff));
    return *this;
  }
  GgufBytes& u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(char((v >> (8 * i)) & 0xff));
    return *this;
  }
  GgufBytes& f32(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    return u32(u);
  }
  // A GGUF string: u64 length, then the bytes.
  GgufBytes& str(std::string_view s) {
    u64(s.size());
    b.append(s);
    return *this;
  }
  // Magic, version, tensor count and metadata count.
  GgufBytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b = "GGUF";
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  // A u32 metadata entry (type id 4).
  GgufBytes& kv_u32(std::string_view key, uint32_t v) {
    str(key);
    u32(4);
    return u32(v);
  }
  // A tensor info: name, ne, type id, offset.
  GgufBytes& info(std::string_view name, std::initializer_list<uint64_t> ne, uint32_t type,
                  uint64_t offset) {
    str(name);
    u32(uint32_t(ne.size()));
    for (uint64_t d : ne) u64(d);
    u32(type);
    return u64(offset);
  }
  // Zeros up to a multiple of the alignment.
  GgufBytes& pad(size_t alignment = 32) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
  // Pads to the alignment and appends n data bytes.
  GgufBytes& data(size_t n, size_t alignment = 32) {
    pad(alignment);
    b.append(n, '\x11');
    return *this;
  }
};

}  // namespace trit::engine::test
