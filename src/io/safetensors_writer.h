// safetensors writer: u64 header length, a JSON header (optional __metadata__ of strings, then
// name -> dtype, shape, [begin, end) offsets in the order tensors were added) padded with
// spaces to a multiple of 8 bytes, then the tensors' bytes back to back. Written to
// "<path>.tmp" and renamed into place, so a failure leaves no output behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace trit::engine {

class SafetensorsWriter {
 public:
  // A tensor whose bytes are already laid out as `dtype` (little-endian, row-major, outermost
  // dimension first); the bytes are copied. Throws when the name is empty, "__metadata__" or
  // taken, or when nbytes does not match the shape.
  void add(std::string name, StDType dtype, std::vector<int64_t> shape, const void* data,
           size_t nbytes);
  // f32 values stored as F32, F16 or BF16 (rounded to nearest even).
  void add_f32(std::string name, std::vector<int64_t> shape, const float* data,
               StDType as = StDType::F32);
  void set_metadata(std::string key, std::string value);

  size_t size() const { return tensors_.size(); }
  // The header as written (JSON, padded with spaces to a multiple of 8 bytes).
  std::string header() const;
  // Writes the file through "<path>.tmp"; throws naming the path.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    StDType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace trit::engine
