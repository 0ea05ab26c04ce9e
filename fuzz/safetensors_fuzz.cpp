// A safetensors file: the JSON header, dtypes, shapes and offsets, then every tensor's elements
// read as f32 (the conversion `trit convert` runs), up to a bound.
#include <vector>

#include "fuzz_input.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = trit::fuzz::write_input("model.safetensors", data, size);
  trit::fuzz::refusing([&] {
    auto file = trit::engine::SafetensorsFile::open(path);
    std::vector<float> out;
    for (const auto& [name, t] : file->tensors()) {
      const int64_t n = std::min<int64_t>(t.n_elements(), 1 << 16);
      out.resize(size_t(n));
      if (n > 0) t.read_f32(0, n, out.data(), path);
    }
  });
  return 0;
}
