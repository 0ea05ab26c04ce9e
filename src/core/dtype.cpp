#include "core/dtype.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <limits>

#include "core/error.h"

namespace trit::engine {
namespace {

const DTypeTraits kF32{"f32", 1, 4, false};
const DTypeTraits kF16{"f16", 1, 2, false};
const DTypeTraits kBF16{"bf16", 1, 2, false};
const DTypeTraits kQ8_0{"q8_0", kQK8_0, 34, false};
const DTypeTraits kQ6_K{"q6_K", kQK_K, 210, false};
const DTypeTraits kTQ1_0{"tq1_0", kQK_K, 54, true};
const DTypeTraits kTQ2_0{"tq2_0", kQK_K, 66, true};
const DTypeTraits kI2_S{"i2_s", kI2SRun, kI2SRun / 4, true};

}  // namespace

std::optional<DType> dtype_from_id(uint32_t id) {
  switch (id) {
    case 0:
      return DType::F32;
    case 1:
      return DType::F16;
    case 8:
      return DType::Q8_0;
    case 14:
      return DType::Q6_K;
    case 30:
      return DType::BF16;
    case 34:
      return DType::TQ1_0;
    case 35:
      return DType::TQ2_0;
    case 36:
      return DType::I2_S;
    default:
      return std::nullopt;
  }
}

const DTypeTraits& dtype_traits(DType t) {
  switch (t) {
    case DType::F32:
      return kF32;
    case DType::F16:
      return kF16;
    case DType::BF16:
      return kBF16;
    case DType::Q8_0:
      return kQ8_0;
    case DType::Q6_K:
      return kQ6_K;
    case DType::TQ1_0:
      return kTQ1_0;
    case DType::TQ2_0:
      return kTQ2_0;
    case DType::I2_S:
      return kI2_S;
  }
  fail("dtype: invalid type ", static_cast<uint32_t>(t));
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q6_K, DType::TQ1_0,
                  DType::TQ2_0, DType::I2_S}) {
    std::string n(dtype_name(t));
    std::transform(n.begin(), n.end(), n.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    if (n == lower) return t;
  }
  return std::nullopt;
}

std::string describe_unknown_dtype(uint32_t id) {
  switch (id) {
    case 37:
      return "type 37 (I8_S in bitnet.cpp, retired IQ4_NL_4_8 in llama.cpp)";
    case 38:
      return "type 38 (TL1 in bitnet.cpp, retired IQ4_NL_8_8 in llama.cpp)";
    case 39:
      return "type 39 (TL2 in bitnet.cpp, MXFP4 in llama.cpp)";
    default:
      break;
  }
  // llama.cpp's other ids, so that a file quantised to a type trit does not read says which.
  static constexpr std::string_view kLlamaNames[] = {"F32",
                                                     "F16",
                                                     "Q4_0",
                                                     "Q4_1",
                                                     "Q4_2 (retired)",
                                                     "Q4_3 (retired)",
                                                     "Q5_0",
                                                     "Q5_1",
                                                     "Q8_0",
                                                     "Q8_1",
                                                     "Q2_K",
                                                     "Q3_K",
                                                     "Q4_K",
                                                     "Q5_K",
                                                     "Q6_K",
                                                     "Q8_K",
                                                     "IQ2_XXS",
                                                     "IQ2_XS",
                                                     "IQ3_XXS",
                                                     "IQ1_S",
                                                     "IQ4_NL",
                                                     "IQ3_S",
                                                     "IQ2_S",
                                                     "IQ4_XS",
                                                     "I8",
                                                     "I16",
                                                     "I32",
                                                     "I64",
                                                     "F64",
                                                     "IQ1_M",
                                                     "BF16",
                                                     "Q4_0_4_4 (retired)",
                                                     "Q4_0_4_8 (retired)",
                                                     "Q4_0_8_8 (retired)"};
  if (id < std::size(kLlamaNames)) return cat("type ", id, " (", kLlamaNames[id], " in llama.cpp)");
  return cat("type ", id);
}

std::optional<uint64_t> tensor_bytes(DType t, int64_t ne0, int64_t n_elements) {
  const DTypeTraits& tr = dtype_traits(t);
  if (ne0 <= 0 || n_elements < 0 || ne0 % tr.block_elems != 0 || n_elements % ne0 != 0) {
    return std::nullopt;
  }
  const uint64_t blocks = uint64_t(n_elements / tr.block_elems);
  if (blocks > std::numeric_limits<uint64_t>::max() / uint64_t(tr.block_bytes)) return std::nullopt;
  uint64_t bytes = blocks * uint64_t(tr.block_bytes);
  if (t == DType::I2_S) {
    if (bytes > std::numeric_limits<uint64_t>::max() - kI2STail) return std::nullopt;
    bytes += kI2STail;
  }
  return bytes;
}

int64_t row_bytes(DType t, int64_t ne0) {
  const DTypeTraits& tr = dtype_traits(t);
  return ne0 / tr.block_elems * tr.block_bytes;
}

void check_block_count(const char* op, DType type, int64_t n) {
  const int64_t block = dtype_traits(type).block_elems;
  if (n < 0) fail(op, ": n=", n, " is negative");
  if (n % block != 0) {
    fail(op, ": n=", n, " is not a multiple of ", block, " (", dtype_name(type), " block)");
  }
}

}  // namespace trit::engine
