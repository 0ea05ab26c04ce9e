// Errors: library code throws trit::Error with a message that names the file, tensor, field
// or op; only the CLI's main turns it into one line on stderr and an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace trit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

}  // namespace trit
