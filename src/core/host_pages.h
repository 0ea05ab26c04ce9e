// HostPages: host memory that a device may give back once it holds its own copy.
#pragma once

#include <cstdint>

namespace trit::engine {

// release() drops the pages of [p, p + n) (a file mapping's, which the kernel reads again if
// they are touched later).
class HostPages {
 public:
  virtual void release(const uint8_t* p, uint64_t n) const = 0;

 protected:
  ~HostPages() = default;
};

}  // namespace trit::engine
