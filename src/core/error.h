// Errors: library code throws trit::Error (the public API's exception, include/trit/error.h)
// with a message that names the file, tensor, field or op; only the shells (the CLI's main, the
// C API) turn it into a line or a status code.
#pragma once

#include <sstream>
#include <string>

#include "trit/error.h"

namespace trit::engine {

// Concatenates its arguments with operator<<.
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

// An error in one field of a public options struct (trit::Error::option names it).
template <class... Args>
[[noreturn]] void fail_option(const char* option, const Args&... args) {
  throw Error(cat(args...), option);
}

}  // namespace trit::engine
