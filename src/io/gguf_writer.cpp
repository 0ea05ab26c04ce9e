// GGUF writer: metadata and tensor infos, then tensor data given whole or streamed, written to
// "<path>.tmp" and renamed into place once every declared byte has arrived.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/gguf.h"

namespace trit::engine {
namespace {

constexpr uint64_t kWriterMaxAlignment = uint64_t(1) << 20;  // as the reader
constexpr size_t kMaxNameBytes = 63;                         // llama.cpp's GGML_MAX_NAME - 1
constexpr size_t kWriterMaxKeyBytes = 65535;
constexpr size_t kBufferBytes = size_t(4) << 20;

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

void check_alignment(uint64_t a, std::string_view where) {
  if (a == 0 || !std::has_single_bit(a) || a > kWriterMaxAlignment) {
    fail(where, ": general.alignment ", a, " must be a power of two from 1 to ",
         kWriterMaxAlignment);
  }
}

bool known_type(GgufType t) {
  return uint32_t(t) <= uint32_t(GgufType::F64);
}

// Value types known and arrays nested at most 8 deep, as the reader accepts.
void check_array(const std::string& key, const GgufArray& a, int depth) {
  if (!known_type(a.item_type)) {
    fail("gguf writer: metadata key '", key, "': unknown array item type ", uint32_t(a.item_type));
  }
  if (a.item_type != GgufType::ARRAY) return;
  if (depth + 1 >= 8) fail("gguf writer: metadata key '", key, "': arrays nested deeper than 8");
  for (const GgufArray& x : a.arrays) check_array(key, x, depth + 1);
}

void check_value(const std::string& key, const GgufValue& v) {
  if (!known_type(v.type)) {
    fail("gguf writer: metadata key '", key, "': unknown value type ", uint32_t(v.type));
  }
  if (v.type == GgufType::ARRAY) check_array(key, v.arr, 0);
}

}  // namespace

GgufWriter::GgufWriter() = default;

GgufWriter::~GgufWriter() {
  discard();
}

void GgufWriter::set(std::string key, GgufValue value) {
  if (out_ != nullptr) fail(path_, ": metadata key '", key, "': set after begin()");
  if (key.empty() || key.size() > kWriterMaxKeyBytes) {
    fail("gguf writer: metadata key '", key.substr(0, 64), "': length ", key.size(), " must be 1..",
         kWriterMaxKeyBytes);
  }
  check_value(key, value);
  if (key == "general.alignment") {
    if (value.type != GgufType::U32) {
      fail("gguf writer: metadata key 'general.alignment': expected u32, found ",
           gguf_type_name(value.type));
    }
    check_alignment(uint64_t(value.i), "gguf writer");
    alignment_ = uint64_t(value.i);
  }
  for (auto& [k, v] : kv_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::remove(std::string_view key) {
  if (out_ != nullptr) fail(path_, ": metadata key '", key, "': removed after begin()");
  for (auto it = kv_.begin(); it != kv_.end(); ++it) {
    if (it->first == key) {
      kv_.erase(it);
      if (key == "general.alignment") alignment_ = 32;
      return;
    }
  }
}

const GgufValue* GgufWriter::find(std::string_view key) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void GgufWriter::set_alignment(uint32_t alignment) {
  set("general.alignment", GgufValue::u32(alignment));
}

size_t GgufWriter::add_tensor(std::string name, DType type, std::vector<int64_t> ne,
                              const void* data) {
  if (out_ != nullptr) fail(path_, ": tensor ", name, ": added after begin()");
  if (name.empty() || name.size() > kMaxNameBytes) {
    fail("gguf writer: tensor ", name, ": name is ", name.size(), " bytes, must be 1..",
         kMaxNameBytes, " (llama.cpp's limit)");
  }
  for (const Pending& t : tensors_) {
    if (t.name == name) fail("gguf writer: tensor ", name, ": duplicate tensor name");
  }
  if (ne.empty() || ne.size() > 4) {
    fail("gguf writer: tensor ", name, ": n_dims ", ne.size(), " must be 1..4");
  }
  int64_t n = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] <= 0)
      fail("gguf writer: tensor ", name, ": ne[", d, "] is ", ne[d], ", must be positive");
    if (ne[d] > std::numeric_limits<int64_t>::max() / n) {
      fail("gguf writer: tensor ", name, ": ne product overflows at ne[", d, "] = ", ne[d]);
    }
    n *= ne[d];
  }
  const std::optional<uint64_t> nbytes = tensor_bytes(type, ne[0], n);
  if (!nbytes) {
    const DTypeTraits& tr = dtype_traits(type);
    fail("gguf writer: tensor ", name, ": ne[0] = ", ne[0], " is not a multiple of the ", tr.name,
         " block size ", tr.block_elems);
  }
  tensors_.push_back(Pending{std::move(name), type, std::move(ne), *nbytes, 0, data});
  return tensors_.size() - 1;
}

uint64_t GgufWriter::tensor_nbytes(size_t index) const {
  if (index >= tensors_.size()) {
    fail("gguf writer: tensor index ", index, " out of range (", tensors_.size(), " tensors)");
  }
  return tensors_[index].nbytes;
}

size_t GgufWriter::tensor_count() const {
  return tensors_.size();
}

void GgufWriter::write(const std::string& path) {
  for (const Pending& t : tensors_) {
    if (t.data == nullptr) {
      fail(path, ": tensor ", t.name, ": no data given (stream it with begin/append/finish)");
    }
  }
  begin(path);
  for (const Pending& t : tensors_) append(t.data, size_t(t.nbytes));
  finish();
}

void GgufWriter::begin(const std::string& path) {
  if (out_ != nullptr) fail(path, ": begin() while ", path_, " is still being written");
  path_ = path;
  tmp_path_ = path + ".tmp";
  out_ = std::fopen(tmp_path_.c_str(), "wb");
  if (out_ == nullptr) {
    const int e = errno;
    tmp_path_.clear();
    fail(path, ": cannot create ", path, ".tmp: ", std::strerror(e));
  }
  if (!buf_) buf_.reset(new char[kBufferBytes]);
  std::setvbuf(out_, buf_.get(), _IOFBF, kBufferBytes);
  pos_ = 0;
  cur_tensor_ = 0;
  cur_written_ = 0;
  appended_ = 0;
  data_bytes_ = 0;
  uint64_t offset = 0;
  for (Pending& t : tensors_) {
    t.offset = offset;
    offset = align_up(offset + t.nbytes, alignment_);
    data_bytes_ += t.nbytes;
  }
  write_header();
}

void GgufWriter::write_header() {
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) {
    u64(s.size());
    put(s.data(), s.size());
  };
  // One scalar of type t from i or f, in its width.
  auto scalar = [&](GgufType t, int64_t i, double f) {
    switch (t) {
      case GgufType::U8:
      case GgufType::I8: {
        const uint8_t v = uint8_t(i);
        put(&v, 1);
        return;
      }
      case GgufType::BOOL: {
        const uint8_t v = i != 0;
        put(&v, 1);
        return;
      }
      case GgufType::U16:
      case GgufType::I16: {
        const uint16_t v = uint16_t(i);
        put(&v, 2);
        return;
      }
      case GgufType::U32:
      case GgufType::I32:
        u32(uint32_t(i));
        return;
      case GgufType::U64:
      case GgufType::I64:
        u64(uint64_t(i));
        return;
      case GgufType::F32: {
        const float v = float(f);
        put(&v, 4);
        return;
      }
      case GgufType::F64:
        put(&f, 8);
        return;
      default:
        return;
    }
  };
  auto array = [&](auto& self, const GgufArray& a) -> void {
    u32(uint32_t(a.item_type));
    u64(a.size());
    switch (a.item_type) {
      case GgufType::STRING:
        for (const std::string& s : a.strings) str(s);
        return;
      case GgufType::ARRAY:
        for (const GgufArray& x : a.arrays) self(self, x);
        return;
      case GgufType::F32:
      case GgufType::F64:
        for (double f : a.floats) scalar(a.item_type, 0, f);
        return;
      default:
        for (int64_t i : a.ints) scalar(a.item_type, i, 0);
        return;
    }
  };

  put("GGUF", 4);
  u32(3);
  u64(tensors_.size());
  u64(kv_.size());
  for (const auto& [key, v] : kv_) {
    str(key);
    u32(uint32_t(v.type));
    if (v.type == GgufType::STRING) {
      str(v.s);
    } else if (v.type == GgufType::ARRAY) {
      array(array, v.arr);
    } else {
      scalar(v.type, v.i, v.f);
    }
  }
  for (const Pending& t : tensors_) {
    str(t.name);
    u32(uint32_t(t.ne.size()));
    for (int64_t d : t.ne) u64(uint64_t(d));
    u32(uint32_t(t.type));
    u64(t.offset);
  }
  pad();
}

void GgufWriter::append(const void* data, size_t n) {
  if (out_ == nullptr) fail("gguf writer: append() before begin()");
  if (n > data_bytes_ - appended_) {
    fail(path_, ": append of ", n, " bytes exceeds the ", data_bytes_ - appended_,
         " bytes the declared tensors still expect");
  }
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const Pending& t = tensors_[cur_tensor_];
    const uint64_t take = std::min<uint64_t>(n, t.nbytes - cur_written_);
    put(p, size_t(take));
    p += take;
    n -= size_t(take);
    cur_written_ += take;
    appended_ += take;
    if (cur_written_ == t.nbytes) {
      pad();
      ++cur_tensor_;
      cur_written_ = 0;
    }
  }
}

void GgufWriter::finish() {
  if (out_ == nullptr) fail("gguf writer: finish() before begin()");
  if (appended_ != data_bytes_) {
    const Pending& t = tensors_[cur_tensor_];
    fail(path_, ": tensor ", t.name, ": got ", cur_written_, " of ", t.nbytes, " bytes (",
         data_bytes_ - appended_, " bytes missing in all)");
  }
  const bool flushed = std::fflush(out_) == 0 && std::ferror(out_) == 0;
  const int e = errno;
  const bool closed = std::fclose(out_) == 0;
  const int e2 = errno;
  out_ = nullptr;
  if (!flushed || !closed) {
    const std::string tmp = tmp_path_;
    discard();
    fail(path_, ": cannot write ", tmp, ": ", std::strerror(flushed ? e2 : e));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int e3 = errno;
    const std::string tmp = tmp_path_;
    discard();
    fail(path_, ": cannot rename ", tmp, " into place: ", std::strerror(e3));
  }
  tmp_path_.clear();
}

void GgufWriter::put(const void* data, size_t n) {
  if (n == 0) return;
  if (std::fwrite(data, 1, n, out_) != n) {
    const int e = errno;
    const std::string tmp = tmp_path_;
    discard();
    fail(path_, ": cannot write ", tmp, ": ", std::strerror(e));
  }
  pos_ += n;
}

void GgufWriter::pad() {
  static const char zeros[4096] = {};
  uint64_t n = align_up(pos_, alignment_) - pos_;
  while (n > 0) {
    const size_t k = size_t(std::min<uint64_t>(n, sizeof(zeros)));
    put(zeros, k);
    n -= k;
  }
}

void GgufWriter::discard() {
  if (out_ != nullptr) std::fclose(out_);
  out_ = nullptr;
  if (!tmp_path_.empty()) std::remove(tmp_path_.c_str());
  tmp_path_.clear();
}

}  // namespace trit::engine
