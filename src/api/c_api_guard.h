// The C API's shared pieces (src/api/c_api*.cpp): the thread's last error, the guard that turns
// every exception into a status and a message, the checks of C arguments, and C strings.
#pragma once

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "trit/error.h"
#include "trit/trit.h"

namespace trit::capi {

// The message of the last call on this thread that failed (trit_last_error).
inline thread_local std::string last_error;

// A C argument or option the C layer itself rejects (a NULL pointer, a count without its
// array): always TRIT_ERROR_INVALID_ARGUMENT.
class ArgumentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void bad_argument(const Args&... args) {
  std::string message;
  (message.append(args), ...);
  throw ArgumentError(message);
}

inline void set_error(const char* message) noexcept {
  try {
    last_error = message;
  } catch (...) {
    last_error.clear();  // no memory for the message: the status still says what happened
  }
}

inline bool starts_with(std::string_view text, std::string_view prefix) {
  return !prefix.empty() && text.substr(0, prefix.size()) == prefix;
}

// The status of a trit::Error. The C++ API has one exception type; its messages start with
// what failed: a file's path ("model.gguf: tensor ..."), the device ("vulkan: ..."), or else
// the option or op, which means what the verb's `fallback` says.
template <class Files>
trit_status status_of(std::string_view message, trit_status fallback, const Files& files) {
  for (const auto& f : files) {
    if (starts_with(message, f)) return TRIT_ERROR_IO;
  }
  return starts_with(message, "vulkan") ? TRIT_ERROR_DEVICE : fallback;
}

// Runs a verb's body: TRIT_OK, or the status and message of what it threw. `files` are the
// paths the verb reads or writes; a trit::Error naming none of them nor the device has status
// `fallback`. (A verb's own messages name it through `fn`, its __func__ taken outside the body,
// in which __func__ is operator().)
template <class Files, class Body>
trit_status guard(trit_status fallback, const Files& files, Body&& body) noexcept {
  last_error.clear();
  try {
    body();
    return TRIT_OK;
  } catch (const ArgumentError& e) {
    set_error(e.what());
    return TRIT_ERROR_INVALID_ARGUMENT;
  } catch (const trit::DeviceLost& e) {  // a GPU lost or out of memory mid-run
    set_error(e.what());
    return TRIT_ERROR_DEVICE;
  } catch (const trit::DeviceOutOfMemory& e) {
    set_error(e.what());
    return TRIT_ERROR_DEVICE;
  } catch (const trit::Error& e) {
    set_error(e.what());
    if (!e.option().empty()) return TRIT_ERROR_INVALID_ARGUMENT;  // an option's value
    return status_of(e.what(), fallback, files);
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
    return TRIT_ERROR_OUT_OF_MEMORY;
  } catch (const std::filesystem::filesystem_error& e) {
    set_error(e.what());
    return TRIT_ERROR_IO;
  } catch (const std::exception& e) {
    set_error(e.what());
    return TRIT_ERROR_UNKNOWN;
  } catch (...) {
    set_error("an exception that is not a std::exception");
    return TRIT_ERROR_UNKNOWN;
  }
}

template <class Body>
trit_status guard(trit_status fallback, std::initializer_list<std::string_view> files,
                  Body&& body) noexcept {
  return guard<std::initializer_list<std::string_view>>(fallback, files, body);
}

inline std::string str(const char* s) {
  return s ? s : "";
}

// A copy in memory the caller frees with trit_string_free.
inline char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

// Checks a pointer argument of the C function `fn`.
inline void require(const void* p, const char* fn, const char* name) {
  if (!p) bad_argument(fn, ": ", name, " is NULL");
}

// Checks a (pointer, count) pair: the pointer may be NULL only with a count of 0.
inline void require_array(const void* p, size_t n, const char* fn, const char* name) {
  if (!p && n > 0) {
    bad_argument(fn, ": ", name, " is NULL with ", std::to_string(n), " elements");
  }
}

// A C string as a view (NULL: empty, which no message starts with).
inline std::string_view view(const char* s) {
  return s ? std::string_view(s) : std::string_view();
}

// A C message callback as the C++ API's (none when cb is NULL).
inline std::function<void(const std::string&)> warning_callback(trit_message_callback cb,
                                                                void* user) {
  if (!cb) return {};
  return [cb, user](const std::string& message) { cb(message.c_str(), user); };
}

}  // namespace trit::capi
