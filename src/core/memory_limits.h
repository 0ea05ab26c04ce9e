// The process's memory limits, for messages: a run that fails to map, allocate or start a
// thread under `ulimit -v` says what the limit is.
#pragma once

#include <sys/resource.h>

#include <cstdint>
#include <string>

namespace trit::engine {

// " (the address space is limited to N MiB: ulimit -v)" when RLIMIT_AS is set, else "".
inline std::string address_space_note() {
  rlimit r{};
  if (getrlimit(RLIMIT_AS, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return "";
  return " (the address space is limited to " + std::to_string(uint64_t(r.rlim_cur) >> 20) +
         " MiB: ulimit -v)";
}

}  // namespace trit::engine
