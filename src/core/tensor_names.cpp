#include "core/tensor_names.h"

#include <algorithm>

#include "core/error.h"

namespace trit::engine {

std::string block_tensor_name(int64_t layer, std::string_view what) {
  return cat("blk.", layer, ".", what, ".weight");
}

const std::vector<std::string>& block_linear_names() {
  static const std::vector<std::string> names = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                 "ffn_gate", "ffn_up", "ffn_down"};
  return names;
}

LinearIndex linear_index(std::string_view what) {
  const auto& names = block_linear_names();
  return LinearIndex(std::find(names.begin(), names.end(), what) - names.begin());
}

}  // namespace trit::engine
