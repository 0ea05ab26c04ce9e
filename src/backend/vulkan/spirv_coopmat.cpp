#include "backend/vulkan/spirv_coopmat.h"

#include <cstring>
#include <map>
#include <set>
#include <string_view>

#include "core/error.h"

namespace trit::engine::vk {
namespace {

using namespace spirv;

constexpr uint32_t kMagic = 0x07230203;
constexpr uint32_t kOpExtension = 10, kOpCapability = 17, kOpTypeInt = 21;
constexpr uint32_t kOpConstantTrue = 41, kOpConstantFalse = 42, kOpConstant = 43;

uint32_t header(uint32_t words, uint32_t op) {
  return words << 16 | op;
}

// Instructions that declare a type (their first operand is the new type's id).
bool declares_type(uint32_t op) {
  return (op >= 19 && op <= 39) || op == 322 || op == 327 || op == 4472 || op == 5341 ||
         op == kOpTypeCooperativeMatrixNV;
}

// Debug and annotation instructions whose first operand names another id (maybe a type's).
bool names_an_id(uint32_t op) {
  switch (op) {
    case 5:     // OpName
    case 6:     // OpMemberName
    case 71:    // OpDecorate
    case 72:    // OpMemberDecorate
    case 73:    // OpDecorationGroup
    case 74:    // OpGroupDecorate
    case 75:    // OpGroupMemberDecorate
    case 332:   // OpDecorateId
    case 5632:  // OpDecorateString
    case 5633:  // OpMemberDecorateString
      return true;
    default:
      return false;
  }
}

std::string_view literal_string(std::span<const uint32_t> words) {
  const char* s = reinterpret_cast<const char*>(words.data());
  return {s, strnlen(s, words.size() * 4)};
}

void append_string(std::vector<uint32_t>& out, std::string_view s) {
  const size_t words = s.size() / 4 + 1;  // with the terminating zero
  const size_t at = out.size();
  out.resize(at + words, 0);
  std::memcpy(out.data() + at, s.data(), s.size());
}

}  // namespace

std::vector<uint32_t> coopmat_nv_to_khr(std::span<const uint32_t> nv) {
  if (nv.size() < 5 || nv[0] != kMagic) fail("coopmat_nv_to_khr: not a SPIR-V module");
  std::vector<std::span<const uint32_t>> insts;
  for (size_t i = 5; i < nv.size();) {
    const uint32_t n = nv[i] >> 16;
    if (n == 0 || n > nv.size() - i) {
      fail("coopmat_nv_to_khr: the instruction at word ", i, " claims ", n, " words of ",
           nv.size() - i, " left");
    }
    insts.push_back(nv.subspan(i, n));
    i += n;
  }

  // What the rewrite needs to know: types, the type of every value, boolean constants, integer
  // types, and the role of each matrix type in the multiplies.
  std::set<uint32_t> types;
  std::map<uint32_t, uint32_t> value_type, matrix_component;
  std::map<uint32_t, bool> int_signed;  // integer type -> signedness
  std::map<uint32_t, uint32_t> layout_of_bool;
  std::map<uint32_t, uint32_t> use;                           // matrix type -> kUse*
  const uint32_t c0 = nv[3], c1 = nv[3] + 1, c2 = nv[3] + 2;  // new constants 0, 1, 2
  size_t uint32_type_at = insts.size(), first_matrix_at = insts.size();
  uint32_t uint32_type = 0;
  for (size_t k = 0; k < insts.size(); ++k) {
    const std::span<const uint32_t> w = insts[k];
    const uint32_t op = w[0] & 0xffff;
    if (declares_type(op) && w.size() >= 2) types.insert(w[1]);
    if (op == kOpTypeInt && w.size() >= 4) {
      int_signed[w[1]] = w[3] != 0;
      if (w[2] == 32 && uint32_type == 0) uint32_type = w[1], uint32_type_at = k;
    }
    if (op == kOpTypeCooperativeMatrixNV && w.size() == 6) {
      matrix_component[w[1]] = w[2];
      first_matrix_at = std::min(first_matrix_at, k);
    }
    if (op == kOpConstantTrue && w.size() >= 3) layout_of_bool[w[2]] = c1;
    if (op == kOpConstantFalse && w.size() >= 3) layout_of_bool[w[2]] = c0;
    if (!declares_type(op) && !names_an_id(op) && w.size() >= 3 && types.count(w[1])) {
      value_type[w[2]] = w[1];
    }
  }
  if (matrix_component.empty()) fail("coopmat_nv_to_khr: the module has no cooperative matrix");
  if (uint32_type == 0 || uint32_type_at > first_matrix_at) {
    fail("coopmat_nv_to_khr: no 32-bit integer type declared before the first matrix type");
  }
  auto type_of = [&](uint32_t id) {
    const auto it = value_type.find(id);
    if (it == value_type.end()) fail("coopmat_nv_to_khr: the type of %", id, " is unknown");
    return it->second;
  };
  auto set_use = [&](uint32_t type, uint32_t u) {
    const auto [it, fresh] = use.emplace(type, u);
    if (!fresh && it->second != u) {
      fail("coopmat_nv_to_khr: matrix type %", type, " serves as operand ", it->second, " and ", u,
           " of multiplies (KHR types have one use)");
    }
  };
  auto is_signed = [&](uint32_t matrix_type) {
    const auto it = int_signed.find(matrix_component[matrix_type]);
    return it != int_signed.end() && it->second;
  };
  for (const std::span<const uint32_t> w : insts) {
    if ((w[0] & 0xffff) != kOpCooperativeMatrixMulAddNV || w.size() != 6) continue;
    set_use(type_of(w[3]), kUseA);
    set_use(type_of(w[4]), kUseB);
    set_use(type_of(w[5]), kUseAccumulator);
    set_use(w[1], kUseAccumulator);
  }
  auto layout = [&](uint32_t column_major) {
    const auto it = layout_of_bool.find(column_major);
    if (it == layout_of_bool.end()) {
      fail("coopmat_nv_to_khr: ColumnMajor %", column_major, " is not a boolean constant");
    }
    return it->second;
  };

  std::vector<uint32_t> out(nv.begin(), nv.begin() + 5);
  out[3] = nv[3] + 3;
  for (size_t k = 0; k < insts.size(); ++k) {
    const std::span<const uint32_t> w = insts[k];
    const uint32_t op = w[0] & 0xffff;
    const uint32_t n = uint32_t(w.size());
    if (op == kOpCapability && n == 2 && w[1] == kCapabilityCooperativeMatrixNV) {
      out.insert(out.end(), {header(2, kOpCapability), kCapabilityCooperativeMatrixKHR});
    } else if (op == kOpExtension && literal_string(w.subspan(1)) == "SPV_NV_cooperative_matrix") {
      const size_t at = out.size();
      out.push_back(0);
      append_string(out, "SPV_KHR_cooperative_matrix");
      out[at] = header(uint32_t(out.size() - at), kOpExtension);
    } else if (op == kOpTypeCooperativeMatrixNV && n == 6) {
      const auto u = use.find(w[1]);
      const uint32_t role = u == use.end() ? kUseAccumulator : u->second;
      out.insert(out.end(), {header(7, kOpTypeCooperativeMatrixKHR), w[1], w[2], w[3], w[4], w[5],
                             role == kUseA   ? c0
                             : role == kUseB ? c1
                                             : c2});
    } else if (op == kOpCooperativeMatrixLoadNV && n >= 6) {
      // result type, result, pointer, stride, column major, [memory access...]
      out.insert(out.end(),
                 {header(n, kOpCooperativeMatrixLoadKHR), w[1], w[2], w[3], layout(w[5]), w[4]});
      out.insert(out.end(), w.begin() + 6, w.end());
    } else if (op == kOpCooperativeMatrixStoreNV && n >= 5) {
      // pointer, object, stride, column major, [memory access...]
      out.insert(out.end(),
                 {header(n, kOpCooperativeMatrixStoreKHR), w[1], w[2], layout(w[4]), w[3]});
      out.insert(out.end(), w.begin() + 5, w.end());
    } else if (op == kOpCooperativeMatrixMulAddNV && n == 6) {
      uint32_t operands = 0;
      if (is_signed(type_of(w[3]))) operands |= kSignedA;
      if (is_signed(type_of(w[4]))) operands |= kSignedB;
      if (is_signed(type_of(w[5]))) operands |= kSignedC;
      if (is_signed(w[1])) operands |= kSignedResult;
      out.insert(out.end(), {header(7, kOpCooperativeMatrixMulAddKHR), w[1], w[2], w[3], w[4], w[5],
                             operands});
    } else if (op == kOpCooperativeMatrixLengthNV) {
      out.push_back(header(n, kOpCooperativeMatrixLengthKHR));
      out.insert(out.end(), w.begin() + 1, w.end());
    } else {
      out.insert(out.end(), w.begin(), w.end());
    }
    if (k == uint32_type_at) {
      for (const auto& [id, value] : {std::pair{c0, 0u}, {c1, 1u}, {c2, 2u}}) {
        out.insert(out.end(), {header(4, kOpConstant), uint32_type, id, value});
      }
    }
  }
  return out;
}

}  // namespace trit::engine::vk
