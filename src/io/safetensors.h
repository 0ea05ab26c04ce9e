// safetensors: u64 header length, a JSON header (name -> dtype, shape, [begin, end) offsets),
// then the data. Memory-mapped; every offset and size is checked against the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace trit::engine {

enum class StDType { F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL };

const char* st_dtype_name(StDType t);  // "F32", "BF16", ... as the header spells them
int64_t st_dtype_size(StDType t);      // bytes per element

struct StTensor {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;  // outermost first, as torch
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  int64_t n_elements() const;
  // Elements as f32 (from f32, f16, bf16, f64); throws naming the file and tensor otherwise.
  std::vector<float> to_f32(const std::string& file) const;
  // Elements [first, first + n) as f32, for reading a large tensor piece by piece.
  void read_f32(int64_t first, int64_t n, float* out, const std::string& file) const;
};

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  const std::string& path() const { return path_; }
  const std::map<std::string, StTensor>& tensors() const { return tensors_; }
  const StTensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  MappedFile file_;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  std::map<std::string, StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face folder: model.safetensors, or the shards named by
// model.safetensors.index.json, or every *.safetensors file in the folder.
class SafetensorsSet {
 public:
  static SafetensorsSet open_folder(const std::string& dir);
  const StTensor* find(const std::string& name) const;
  const StTensor& get(const std::string& name) const;  // throws naming the folder and tensor
  std::vector<std::string> names() const;
  const std::string& file_of(const std::string& name) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> index_;  // tensor name -> file
};

}  // namespace trit::engine
