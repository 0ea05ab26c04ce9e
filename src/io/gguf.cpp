// GGUF reader: maps the file and checks every count, length, offset and size against the bytes
// that are actually there before it reads or allocates anything. The writer is gguf_writer.cpp.
#include "io/gguf.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "core/error.h"

namespace trit::engine {

static_assert(std::endian::native == std::endian::little, "GGUF is little-endian");

namespace {

constexpr uint64_t kMaxAlignment = uint64_t(1) << 20;    // 1 MiB: far above any page size
constexpr uint32_t kMaxDims = 4;                         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;                        // nested arrays; bounds the recursion
constexpr uint64_t kMaxKeyBytes = 65535;                 // the GGUF spec's limit for keys
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // empty key, type, one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset

bool known_type(uint32_t t) {
  return t <= uint32_t(GgufType::F64);
}

// Bytes of one item by type id (a string's or an array's least: its length, or item type and
// count).
constexpr uint64_t kItemBytes[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};
uint64_t min_item_bytes(GgufType t) {
  return kItemBytes[uint32_t(t)];
}

bool is_integer(GgufType t) {
  return t != GgufType::F32 && t != GgufType::F64 && t != GgufType::BOOL && t != GgufType::STRING &&
         t != GgufType::ARRAY;
}

// Keys and names as they can appear in a one-line message: control bytes as \xNN.
std::string printable(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

std::string type_text(const GgufValue& v) {
  if (v.type == GgufType::ARRAY) return cat("array of ", gguf_type_name(v.arr.item_type));
  return std::string(gguf_type_name(v.type));
}

std::string int_text(const GgufValue& v) {
  return v.type == GgufType::U64 ? std::to_string(uint64_t(v.i)) : std::to_string(v.i);
}

// A bounds-checked reader over the mapping. `what` names the item being read ("header",
// "metadata key 'x'", "tensor blk.0.attn_q.weight") and `field` the part of it.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what, const char* field) const {
    if (n > left()) {
      fail(path_, ": ", what, ": ", field, " needs ", n, " bytes at byte ", pos_, ", file is ",
           size_, " bytes");
    }
  }

  template <class T>
  T read(const std::string& what, const char* field) {
    need(sizeof(T), what, field);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what, const char* field, uint64_t max_len) {
    const uint64_t n = read<uint64_t>(what, field);
    if (n > left()) {
      fail(path_, ": ", what, ": ", field, " length ", n, " exceeds the ", left(),
           " bytes left in the file");
    }
    if (n > max_len) fail(path_, ": ", what, ": ", field, " length ", n, " exceeds ", max_len);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += n;
    return s;
  }

  // Reads a count of items that take at least min_bytes each, refusing counts the rest of the
  // file cannot hold.
  uint64_t read_count(const std::string& what, const char* field, uint64_t min_bytes) {
    const uint64_t n = read<uint64_t>(what, field);
    if (n > left() / min_bytes) {
      fail(path_, ": ", what, ": ", field, " ", n, " exceeds what the ", left(),
           " bytes left in the file can hold");
    }
    return n;
  }

  const std::string& path() const { return path_; }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Reads one scalar of type t into i (integers, bool) or f (floats).
void read_scalar(Cursor& c, GgufType t, const std::string& what, int64_t& i, double& f) {
  const char* field = "value";
  switch (t) {
    case GgufType::U8:
      i = c.read<uint8_t>(what, field);
      return;
    case GgufType::I8:
      i = c.read<int8_t>(what, field);
      return;
    case GgufType::U16:
      i = c.read<uint16_t>(what, field);
      return;
    case GgufType::I16:
      i = c.read<int16_t>(what, field);
      return;
    case GgufType::U32:
      i = c.read<uint32_t>(what, field);
      return;
    case GgufType::I32:
      i = c.read<int32_t>(what, field);
      return;
    case GgufType::U64:
      i = int64_t(c.read<uint64_t>(what, field));
      return;
    case GgufType::I64:
      i = c.read<int64_t>(what, field);
      return;
    case GgufType::BOOL:
      i = c.read<uint8_t>(what, field) != 0;
      return;
    case GgufType::F32:
      f = c.read<float>(what, field);
      return;
    case GgufType::F64:
      f = c.read<double>(what, field);
      return;
    default:
      fail(c.path(), ": ", what, ": internal: not a scalar type");
  }
}

GgufType read_type(Cursor& c, const std::string& what, const char* field) {
  const uint32_t t = c.read<uint32_t>(what, field);
  if (!known_type(t)) fail(c.path(), ": ", what, ": unknown ", field, " ", t, " (known: 0..12)");
  return GgufType(t);
}

void read_array(Cursor& c, GgufArray& arr, const std::string& what, int depth) {
  arr.item_type = read_type(c, what, "array item type");
  if (arr.item_type == GgufType::ARRAY && depth + 1 >= kMaxArrayDepth) {
    fail(c.path(), ": ", what, ": arrays nested deeper than ", kMaxArrayDepth, " levels");
  }
  const uint64_t n = c.read_count(what, "array count", min_item_bytes(arr.item_type));
  switch (arr.item_type) {
    case GgufType::STRING:
      arr.strings.reserve(n);
      for (uint64_t k = 0; k < n; ++k) {
        arr.strings.push_back(c.read_string(what, "string", std::numeric_limits<uint64_t>::max()));
      }
      return;
    case GgufType::ARRAY:
      arr.arrays.resize(n);
      for (GgufArray& a : arr.arrays) read_array(c, a, what, depth + 1);
      return;
    case GgufType::F32:
    case GgufType::F64: {
      arr.floats.resize(n);
      int64_t unused = 0;
      for (double& f : arr.floats) read_scalar(c, arr.item_type, what, unused, f);
      return;
    }
    default: {
      arr.ints.resize(n);
      double unused = 0;
      for (int64_t& i : arr.ints) read_scalar(c, arr.item_type, what, i, unused);
      return;
    }
  }
}

GgufValue read_value(Cursor& c, GgufType t, const std::string& what) {
  GgufValue v;
  v.type = t;
  if (t == GgufType::STRING) {
    v.s = c.read_string(what, "string", std::numeric_limits<uint64_t>::max());
  } else if (t == GgufType::ARRAY) {
    read_array(c, v.arr, what, 0);
  } else {
    read_scalar(c, t, what, v.i, v.f);
  }
  return v;
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8:
      return "u8";
    case GgufType::I8:
      return "i8";
    case GgufType::U16:
      return "u16";
    case GgufType::I16:
      return "i16";
    case GgufType::U32:
      return "u32";
    case GgufType::I32:
      return "i32";
    case GgufType::F32:
      return "f32";
    case GgufType::BOOL:
      return "bool";
    case GgufType::STRING:
      return "string";
    case GgufType::ARRAY:
      return "array";
    case GgufType::U64:
      return "u64";
    case GgufType::I64:
      return "i64";
    case GgufType::F64:
      return "f64";
  }
  return "unknown";
}

size_t GgufArray::size() const {
  switch (item_type) {
    case GgufType::STRING:
      return strings.size();
    case GgufType::ARRAY:
      return arrays.size();
    case GgufType::F32:
    case GgufType::F64:
      return floats.size();
    default:
      return ints.size();
  }
}

namespace {

GgufValue make_value(GgufType t, int64_t i, double f = 0) {
  GgufValue r;
  r.type = t;
  r.i = i;
  r.f = f;
  return r;
}

GgufValue make_array(GgufType item_type, std::vector<int64_t> ints, std::vector<double> floats,
                     std::vector<std::string> strings) {
  GgufValue r = make_value(GgufType::ARRAY, 0);
  r.arr.item_type = item_type;
  r.arr.ints = std::move(ints);
  r.arr.floats = std::move(floats);
  r.arr.strings = std::move(strings);
  return r;
}

}  // namespace

GgufValue GgufValue::u32(uint32_t v) {
  return make_value(GgufType::U32, v);
}
GgufValue GgufValue::i32(int32_t v) {
  return make_value(GgufType::I32, v);
}
GgufValue GgufValue::u64(uint64_t v) {
  return make_value(GgufType::U64, int64_t(v));
}
GgufValue GgufValue::f32(float v) {
  return make_value(GgufType::F32, 0, v);
}
GgufValue GgufValue::boolean(bool v) {
  return make_value(GgufType::BOOL, v);
}

GgufValue GgufValue::string(std::string v) {
  GgufValue r = make_value(GgufType::STRING, 0);
  r.s = std::move(v);
  return r;
}

GgufValue GgufValue::string_array(std::vector<std::string> v) {
  return make_array(GgufType::STRING, {}, {}, std::move(v));
}

GgufValue GgufValue::i32_array(const std::vector<int32_t>& v) {
  return make_array(GgufType::I32, {v.begin(), v.end()}, {}, {});
}

GgufValue GgufValue::f32_array(const std::vector<float>& v) {
  return make_array(GgufType::F32, {}, {v.begin(), v.end()}, {});
}

bool GgufTensor::matrix_dims(int64_t* ne0, int64_t* ne1) const {
  if (ne.empty()) return false;
  for (size_t d = 2; d < ne.size(); ++d) {
    if (ne[d] != 1) return false;
  }
  *ne0 = ne[0];
  *ne1 = ne.size() > 1 ? ne[1] : 1;
  return true;
}

int64_t GgufTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}
void GgufFile::read(const uint8_t* p, uint64_t n, uint8_t* dst) const {
  if (const int e = file_.read(p, n, dst); e != 0) {
    fail(path_, ": cannot read ", n, " bytes at offset ", uint64_t(p - map_), ": ",
         std::strerror(e));
  }
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->file_ = MappedFile::open(path);
  f->map_ = f->file_.data();
  f->size_ = f->file_.size();
  f->parse();
  return f;
}

GgufFile::~GgufFile() = default;

void GgufFile::parse() {
  const std::string& p = path_;
  Cursor c(p, map_, size_);
  const std::string header = "header";

  // Header.
  c.need(4, header, "magic");
  if (std::memcmp(map_, "GGUF", 4) != 0) {
    std::string shown;
    for (int k = 0; k < 4; ++k) {
      const char ch = char(map_[k]);
      shown += (ch >= 0x20 && ch < 0x7f) ? ch : '?';
    }
    fail(p, ": header: magic is '", shown, "', expected 'GGUF' (not a GGUF file)");
  }
  c.read<uint32_t>(header, "magic");
  version_ = c.read<uint32_t>(header, "version");
  if (version_ == 1) {
    fail(p, ": header: GGUF version 1 is not supported (32-bit counts); convert the file again");
  }
  if (version_ == 0x02000000u || version_ == 0x03000000u) {
    fail(p, ": header: version ", version_ >> 24, " big-endian GGUF is not supported");
  }
  if (version_ != 2 && version_ != 3) {
    fail(p, ": header: GGUF version ", version_, " is not supported (expected 2 or 3)");
  }
  const uint64_t n_tensors = c.read_count(header, "tensor count", kMinTensorInfoBytes);
  const uint64_t n_kv = c.read_count(header, "metadata count", kMinKvBytes);
  if (n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > c.left()) {
    fail(p, ": header: ", n_kv, " metadata items and ", n_tensors, " tensors cannot fit in the ",
         c.left(), " bytes left in the file");
  }

  // Metadata.
  std::unordered_map<std::string, uint64_t> seen;
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string item = cat("metadata item ", k);
    std::string key = c.read_string(item, "key", kMaxKeyBytes);
    const std::string what = cat("metadata key '", printable(key), "'");
    if (auto [it, fresh] = seen.emplace(key, k); !fresh) {
      fail(p, ": ", what, ": duplicate key (items ", it->second, " and ", k, ")");
    }
    const GgufType t = read_type(c, what, "value type");
    kv_.emplace_back(std::move(key), read_value(c, t, what));
  }

  // general.alignment (read before the tensor infos so their offsets can be checked).
  if (const GgufValue* a = find("general.alignment")) {
    const char* what = "metadata key 'general.alignment'";
    if (!is_integer(a->type)) fail(p, ": ", what, ": expected u32, found ", type_text(*a));
    if (a->type == GgufType::U64 ? uint64_t(a->i) > kMaxAlignment
                                 : (a->i < 0 || a->i > int64_t(kMaxAlignment))) {
      fail(p, ": ", what, ": ", int_text(*a), " exceeds the limit of ", kMaxAlignment);
    }
    alignment_ = uint64_t(a->i);
    if (!std::has_single_bit(alignment_)) {
      fail(p, ": ", what, ": ", alignment_, " is not a power of two");
    }
  }

  // Tensor infos.
  seen.clear();
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.name = c.read_string(cat("tensor info ", k), "name", kMaxKeyBytes);
    const std::string what = cat("tensor ", printable(t.name));
    if (auto [it, fresh] = seen.emplace(t.name, k); !fresh) {
      fail(p, ": ", what, ": duplicate tensor name (infos ", it->second, " and ", k, ")");
    }
    const uint32_t n_dims = c.read<uint32_t>(what, "n_dims");
    if (n_dims > kMaxDims) fail(p, ": ", what, ": n_dims ", n_dims, " exceeds ", kMaxDims);
    int64_t n = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t v = c.read<uint64_t>(what, "ne");
      if (v == 0 || v > uint64_t(std::numeric_limits<int64_t>::max())) {
        fail(p, ": ", what, ": ne[", d, "] is ", int64_t(v), ", must be positive");
      }
      if (int64_t(v) > std::numeric_limits<int64_t>::max() / n) {
        fail(p, ": ", what, ": ne product overflows at ne[", d, "] = ", v);
      }
      n *= int64_t(v);
      t.ne.push_back(int64_t(v));
    }
    if (t.ne.empty()) t.ne.push_back(1);  // a 0-dim tensor (scalar) is one element
    const uint32_t type_id = c.read<uint32_t>(what, "type");
    const std::optional<DType> type = dtype_from_id(type_id);
    if (!type) fail(p, ": ", what, ": unsupported tensor ", describe_unknown_dtype(type_id));
    t.type = *type;
    t.offset = c.read<uint64_t>(what, "offset");
    const std::optional<uint64_t> nbytes = tensor_bytes(t.type, t.ne[0], n);
    if (!nbytes) {
      const DTypeTraits& tr = dtype_traits(t.type);
      if (t.ne[0] % tr.block_elems != 0) {
        fail(p, ": ", what, ": ne[0] = ", t.ne[0], " is not a multiple of the ", tr.name,
             " block size ", tr.block_elems);
      }
      fail(p, ": ", what, ": byte size of ", n, " ", tr.name, " elements overflows");
    }
    t.nbytes = *nbytes;
    if (t.offset % alignment_ != 0) {
      fail(p, ": ", what, ": offset ", t.offset, " is not a multiple of the alignment ",
           alignment_);
    }
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment; every tensor inside the file.
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (GgufTensor& t : tensors_) {
    uint64_t end = 0;
    const bool overflow = __builtin_add_overflow(data_offset_, t.offset, &end) ||
                          __builtin_add_overflow(end, t.nbytes, &end);
    if (overflow || end > size_) {
      fail(p, ": tensor ", printable(t.name), ": data ends ",
           overflow ? std::string("past byte 2^64") : cat("at byte ", end), ", file is ", size_,
           " bytes");
    }
    t.data = map_ + data_offset_ + t.offset;
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return &v;
  }
  return nullptr;
}

namespace {

[[noreturn]] void wrong_type(const std::string& path, std::string_view key, std::string_view want,
                             const GgufValue& v) {
  fail(path, ": metadata key '", key, "': expected ", want, ", found ", type_text(v));
}

const GgufValue& must_find(const GgufFile& f, std::string_view key, std::string_view want) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) fail(f.path(), ": metadata key '", key, "': missing (expected ", want, ")");
  return *v;
}

// Any integer type whose value lies in [lo, hi]; `want` names the getter's type.
int64_t as_int(const std::string& path, std::string_view key, const GgufValue& v,
               std::string_view want, int64_t lo, int64_t hi) {
  if (!is_integer(v.type)) wrong_type(path, key, want == "i64" ? "an integer" : want, v);
  const bool too_big = v.type == GgufType::U64 ? uint64_t(v.i) > uint64_t(hi) : v.i > hi;
  if (too_big || (v.type != GgufType::U64 && v.i < lo)) {
    fail(path, ": metadata key '", key, "': value ", int_text(v), " (", type_text(v),
         ") does not fit in ", want);
  }
  return v.i;
}

float as_f32(const std::string& path, std::string_view key, const GgufValue& v) {
  if (v.type != GgufType::F32 && v.type != GgufType::F64) wrong_type(path, key, "f32", v);
  return float(v.f);
}

}  // namespace

uint32_t GgufFile::get_u32(std::string_view key) const {
  return uint32_t(as_int(path_, key, must_find(*this, key, "u32"), "u32", 0,
                         std::numeric_limits<uint32_t>::max()));
}

uint32_t GgufFile::get_u32_or(std::string_view key, uint32_t fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  return uint32_t(as_int(path_, key, *v, "u32", 0, std::numeric_limits<uint32_t>::max()));
}

int64_t GgufFile::get_int(std::string_view key) const {
  return as_int(path_, key, must_find(*this, key, "an integer"), "i64",
                std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
}

float GgufFile::get_f32(std::string_view key) const {
  return as_f32(path_, key, must_find(*this, key, "f32"));
}

float GgufFile::get_f32_or(std::string_view key, float fallback) const {
  const GgufValue* v = find(key);
  return v == nullptr ? fallback : as_f32(path_, key, *v);
}

bool GgufFile::get_bool_or(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufType::BOOL) wrong_type(path_, key, "bool", *v);
  return v->i != 0;
}

const std::string& GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = must_find(*this, key, "string");
  if (v.type != GgufType::STRING) wrong_type(path_, key, "string", v);
  return v.s;
}

std::string GgufFile::get_string_or(std::string_view key, std::string fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufType::STRING) wrong_type(path_, key, "string", *v);
  return v->s;
}

const GgufArray& GgufFile::get_array(std::string_view key, GgufType item_type) const {
  const std::string want = cat("array of ", gguf_type_name(item_type));
  const GgufValue& v = must_find(*this, key, want);
  if (v.type != GgufType::ARRAY || v.arr.item_type != item_type) wrong_type(path_, key, want, v);
  return v.arr;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  for (const GgufTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const GgufTensor& GgufFile::tensor(std::string_view name) const {
  const GgufTensor* t = find_tensor(name);
  if (t == nullptr) fail(path_, ": missing tensor ", name);
  return *t;
}

}  // namespace trit::engine
