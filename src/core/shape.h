// Shapes in messages: "[2560, 6912]" (GGUF's ne order) or "(6912, 2560)" (torch's order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace trit::engine {

inline std::string shape_text(const std::vector<int64_t>& dims, char open = '[', char close = ']') {
  std::string s(1, open);
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + close;
}

}  // namespace trit::engine
