// Tensor data types as GGUF numbers them, and the byte sizes of their blocks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trit::engine {

// Type ids as llama.cpp numbers them; 36 is bitnet.cpp's I2_S (see DESIGN.md section 3).
enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
  Q6_K = 14,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  I2_S = 36,
};

constexpr int64_t kQK8_0 = 32;
constexpr int64_t kQK_K = 256;
constexpr int64_t kI2SRun = 128;  // I2_S packs runs of 128 weights into 32 bytes
constexpr int64_t kI2STail = 32;  // I2_S tensors end with 32 bytes: fp32 scale + padding

struct DTypeTraits {
  std::string_view name;
  int64_t block_elems;  // weights per block
  int64_t block_bytes;  // bytes per block (I2_S: 1 byte per 4 weights; plus the tensor tail)
  bool ternary;
};

// The id as a known type, or nullopt for ids trit does not read.
std::optional<DType> dtype_from_id(uint32_t id);
const DTypeTraits& dtype_traits(DType t);
inline std::string_view dtype_name(DType t) {
  return dtype_traits(t).name;
}
std::optional<DType> dtype_from_name(std::string_view name);  // "tq2_0", "f16", ... any case

// Explains an unsupported type id (names both llama.cpp's and bitnet.cpp's meaning where they
// collide), for error messages.
std::string describe_unknown_dtype(uint32_t id);

// Bytes of a tensor of n elements whose innermost dimension is ne0; nullopt when ne0 is not a
// multiple of the block size (or for I2_S, of 128), or on overflow.
std::optional<uint64_t> tensor_bytes(DType t, int64_t ne0, int64_t n_elements);

// Throws naming op unless n >= 0 is a multiple of the type's block.
void check_block_count(const char* op, DType type, int64_t n);

// Bytes of one row of ne0 elements (I2_S: ne0 / 4, without the tensor tail).
int64_t row_bytes(DType t, int64_t ne0);

}  // namespace trit::engine
