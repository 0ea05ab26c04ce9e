// What the fuzz targets share: the input written to a file (the parsers read files, as users'
// programs do), the shipped model for targets that need a tokenizer, and the rule that a bad
// input ends in trit::Error and nothing else (any other exception, a crash or a sanitizer report
// is a finding).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "trit/error.h"

namespace trit::fuzz {

// A folder of this process's own under /dev/shm (memory) when there is one, else /tmp; removed
// at exit.
inline const std::string& scratch_dir() {
  // Never destroyed: the exit handler that removes the folder runs after static destructors.
  static const std::string* dir = [] {
    const std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    auto* d = new std::string(base + "/trit-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] { std::filesystem::remove_all(scratch_dir()); });
    return d;
  }();
  return *dir;
}

// Writes bytes to scratch_dir()/name and returns the path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The model the repository ships (its tokenizer and chat template serve the data targets).
inline std::string shipped_model() {
  return TRIT_FUZZ_MODEL;
}

// Runs f; a trit::Error is the expected refusal of a bad input (its message must not be empty).
template <class F>
void refusing(F&& f) {
  try {
    f();
  } catch (const trit::Error& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
}

}  // namespace trit::fuzz
