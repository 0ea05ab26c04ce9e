// FNV-1a (64-bit): the checksum of checkpoint files and the digest of a run's data. Not a
// cryptographic hash: it tells damaged or different bytes apart, not forged ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace trit::engine {

class Fnv1a64 {
 public:
  void update(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    uint64_t h = h_;
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
    h_ = h;
  }
  void update(std::string_view s) { update(s.data(), s.size()); }
  uint64_t value() const { return h_; }
  std::string hex() const {
    char out[17];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h_));
    return out;
  }

 private:
  uint64_t h_ = 1469598103934665603ull;
};

}  // namespace trit::engine
