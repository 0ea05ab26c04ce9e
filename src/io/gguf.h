// GGUF v3: a memory-mapped reader that checks every count, offset and size against the file
// before use, and a writer that streams tensor data to a temporary file renamed into place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/host_pages.h"
#include "io/mapped_file.h"

namespace trit::engine {

enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

std::string_view gguf_type_name(GgufType t);

struct GgufArray {
  GgufType item_type = GgufType::U8;
  std::vector<int64_t> ints;         // integer and bool items (u64 kept bit for bit)
  std::vector<double> floats;        // f32 and f64 items
  std::vector<std::string> strings;  // string items
  std::vector<GgufArray> arrays;     // nested arrays
  size_t size() const;
};

struct GgufValue {
  GgufType type = GgufType::U32;
  int64_t i = 0;  // every integer type and bool (u64 kept bit for bit)
  double f = 0;   // f32 and f64
  std::string s;  // string
  GgufArray arr;  // array

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue i32_array(const std::vector<int32_t>& v);
  static GgufValue f32_array(const std::vector<float>& v);
};

struct GgufTensor {
  std::string name;
  DType type = DType::F32;
  std::vector<int64_t> ne;  // ne[0] is the innermost, contiguous dimension
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping
  int64_t n_elements() const;
  int64_t rows() const { return ne.empty() ? 0 : n_elements() / ne[0]; }
  // The two dimensions of a matrix: ggml writes trailing 1s off (a rank-1 lora_a may come with
  // one dimension), so [n] means [n, 1]; false when a further dimension is not 1.
  bool matrix_dims(int64_t* ne0, int64_t* ne1) const;
};

class GgufFile final : public HostPages {
 public:
  // Maps and validates the whole file: header, every metadata item, tensor infos (types known,
  // shapes positive, sizes consistent, data inside the file, offsets aligned, names unique).
  static std::unique_ptr<GgufFile> open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters: throw trit::Error naming the file, the key and the expected type when the
  // key is missing or has another type. Integer getters accept any integer type whose value
  // fits. The _or forms return the fallback when the key is missing (but still throw on a type
  // mismatch).
  uint32_t get_u32(std::string_view key) const;
  uint32_t get_u32_or(std::string_view key, uint32_t fallback) const;
  int64_t get_int(std::string_view key) const;
  float get_f32(std::string_view key) const;
  float get_f32_or(std::string_view key, float fallback) const;
  bool get_bool_or(std::string_view key, bool fallback) const;
  const std::string& get_string(std::string_view key) const;
  std::string get_string_or(std::string_view key, std::string fallback) const;
  const GgufArray& get_array(std::string_view key, GgufType item_type) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(std::string_view name) const;
  const GgufTensor& tensor(std::string_view name) const;  // throws "<file>: missing tensor X"
  // Drops a tensor's pages from memory after its data was converted (MappedFile::release).
  void release(const GgufTensor& t) const { file_.release(t.data, t.nbytes); }
  // The same for any bytes of the mapping, and read-ahead of them (MappedFile::prefetch).
  void release(const uint8_t* p, uint64_t n) const override { file_.release(p, n); }
  void prefetch(const uint8_t* p, uint64_t n) const { file_.prefetch(p, n); }
  bool maps(const uint8_t* p) const { return file_.contains(p); }
  // Copies the mapped bytes [p, p + n) into dst with pread (MappedFile::read), leaving the
  // mapping's pages out; throws trit::Error naming the file, the offset and the reason.
  void read(const uint8_t* p, uint64_t n, uint8_t* dst) const;

 private:
  GgufFile() = default;
  void parse();  // fills everything below from the mapping; throws on the first problem
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t size_ = 0;
  MappedFile file_;
  const uint8_t* map_ = nullptr;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensor> tensors_;
};

// Writes a GGUF v3 file. Metadata first, then tensor infos; tensor data is either given as a
// pointer (write()) or streamed in order (begin(), append(), finish()) so that a file larger
// than memory can be written. The file is written to "<path>.tmp" and renamed into place by
// finish(); a writer destroyed before finish() removes the temporary file.
class GgufWriter {
 public:
  GgufWriter();
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  void set(std::string key, GgufValue value);  // replaces an existing key, keeps the order
  void set_u32(std::string key, uint32_t v) { set(std::move(key), GgufValue::u32(v)); }
  void set_f32(std::string key, float v) { set(std::move(key), GgufValue::f32(v)); }
  void set_bool(std::string key, bool v) { set(std::move(key), GgufValue::boolean(v)); }
  void set_string(std::string key, std::string v) {
    set(std::move(key), GgufValue::string(std::move(v)));
  }
  void remove(std::string_view key);
  const GgufValue* find(std::string_view key) const;
  void set_alignment(uint32_t alignment);  // also writes general.alignment

  // Declares a tensor; data may be given now (kept by pointer until write()) or streamed.
  // Returns its index. Throws when the shape does not fit the type's block size.
  size_t add_tensor(std::string name, DType type, std::vector<int64_t> ne,
                    const void* data = nullptr);
  uint64_t tensor_nbytes(size_t index) const;
  size_t tensor_count() const;

  // Whole file at once; every tensor must have been given data.
  void write(const std::string& path);

  // Streaming: begin() writes header and infos; append() writes the tensors' bytes in order,
  // in as many pieces as wanted; finish() checks that every byte came, pads, and renames.
  void begin(const std::string& path);
  void append(const void* data, size_t n);
  void finish();

 private:
  struct Pending {
    std::string name;
    DType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    uint64_t offset;
    const void* data;
  };
  void write_header();
  void put(const void* data, size_t n);  // throws naming the path when the write fails
  void pad();                            // zeros up to the next multiple of alignment_
  void discard();                        // closes and removes the temporary file
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Pending> tensors_;
  uint64_t alignment_ = 32;
  std::string path_, tmp_path_;
  std::FILE* out_ = nullptr;
  size_t cur_tensor_ = 0;
  uint64_t cur_written_ = 0;     // bytes of the current tensor written so far
  std::unique_ptr<char[]> buf_;  // stdio buffer of out_
  uint64_t pos_ = 0;             // bytes written to out_ so far
  uint64_t data_bytes_ = 0;      // tensor bytes declared in all
  uint64_t appended_ = 0;        // tensor bytes appended so far
};

}  // namespace trit::engine
