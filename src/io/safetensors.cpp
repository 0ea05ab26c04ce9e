#include "io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/half.h"

namespace trit::engine {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;  // 100 MiB

struct DTypeEntry {
  const char* name;
  StDType type;
  int64_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {"F32", StDType::F32, 4},   {"F16", StDType::F16, 2}, {"BF16", StDType::BF16, 2},
    {"F64", StDType::F64, 8},   {"I8", StDType::I8, 1},   {"U8", StDType::U8, 1},
    {"I16", StDType::I16, 2},   {"I32", StDType::I32, 4}, {"I64", StDType::I64, 8},
    {"BOOL", StDType::BOOL, 1},
};

bool dtype_from_name(const std::string& name, StDType* out) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) {
      *out = e.type;
      return true;
    }
  }
  return false;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Reads one tensor's header entry; `where` is "<file>: tensor <name>".
StTensor parse_entry(const std::string& where, const std::string& name, const json& entry,
                     const uint8_t* data, uint64_t data_size) {
  if (!entry.is_object()) fail(where, ": entry is not a JSON object");
  StTensor t;
  t.name = name;

  auto dt = entry.find("dtype");
  if (dt == entry.end()) fail(where, ": missing field dtype");
  if (!dt->is_string()) fail(where, ": dtype is not a string");
  if (!dtype_from_name(dt->get<std::string>(), &t.dtype)) {
    fail(where, ": unknown dtype '", dt->get<std::string>(), "'");
  }

  auto sh = entry.find("shape");
  if (sh == entry.end()) fail(where, ": missing field shape");
  if (!sh->is_array()) fail(where, ": shape is not an array");
  if (sh->size() > 16) fail(where, ": shape has ", sh->size(), " dimensions, at most 16 are read");
  uint64_t elements = 1;
  for (const json& d : *sh) {
    if (!d.is_number_integer()) fail(where, ": shape ", sh->dump(), " holds a non-integer");
    if (d.is_number_unsigned()) {
      const uint64_t v = d.get<uint64_t>();
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) {
        fail(where, ": shape ", sh->dump(), " has a dimension too large");
      }
      t.shape.push_back(int64_t(v));
    } else {
      const int64_t v = d.get<int64_t>();
      if (v < 0) fail(where, ": shape ", sh->dump(), " has a negative dimension");
      t.shape.push_back(v);
    }
    const uint64_t dim = uint64_t(t.shape.back());
    if (dim != 0 && elements > uint64_t(std::numeric_limits<int64_t>::max()) / dim) {
      fail(where, ": shape ", sh->dump(), " has too many elements");
    }
    elements *= dim;
  }
  const uint64_t esize = uint64_t(st_dtype_size(t.dtype));
  if (elements > std::numeric_limits<uint64_t>::max() / esize) {
    fail(where, ": shape ", sh->dump(), " has too many elements");
  }
  const uint64_t need = elements * esize;

  auto off = entry.find("data_offsets");
  if (off == entry.end()) fail(where, ": missing field data_offsets");
  if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    fail(where, ": data_offsets ", off->dump(), " is not a pair of non-negative integers");
  }
  const uint64_t begin = (*off)[0].get<uint64_t>();
  const uint64_t end = (*off)[1].get<uint64_t>();
  if (begin > end) fail(where, ": data_offsets [", begin, ", ", end, ") end before they begin");
  if (end > data_size) {
    fail(where, ": data_offsets [", begin, ", ", end, ") exceed the ", data_size, " bytes of data");
  }
  if (end - begin != need) {
    fail(where, ": data_offsets [", begin, ", ", end, ") hold ", end - begin, " bytes, but ",
         st_dtype_name(t.dtype), " ", sh->dump(), " needs ", need);
  }
  t.data = data + begin;
  t.nbytes = need;
  return t;
}

std::string base_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

}  // namespace

const char* st_dtype_name(StDType t) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.type == t) return e.name;
  }
  return "?";
}

int64_t st_dtype_size(StDType t) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.type == t) return e.size;
  }
  return 1;
}

int64_t StTensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void StTensor::read_f32(int64_t first, int64_t n, float* out, const std::string& file) const {
  const int64_t total = n_elements();
  if (first < 0 || n < 0 || first > total || n > total - first) {
    fail(file, ": tensor ", name, ": elements [", first, ", ", first + n, ") out of range (", total,
         " elements)");
  }
  const uint8_t* p = data + uint64_t(first) * uint64_t(st_dtype_size(dtype));
  switch (dtype) {
    case StDType::F32:
      std::memcpy(out, p, size_t(n) * 4);
      return;
    case StDType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = fp16_to_f32(h);
      }
      return;
    case StDType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case StDType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = float(d);
      }
      return;
    default:
      fail(file, ": tensor ", name, ": dtype ", st_dtype_name(dtype),
           " is not a floating-point type (expected F32, F16, BF16 or F64)");
  }
}

std::vector<float> StTensor::to_f32(const std::string& file) const {
  std::vector<float> out(static_cast<size_t>(n_elements()));
  read_f32(0, n_elements(), out.data(), file);
  return out;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->file_ = MappedFile::open(path);
  const uint64_t size = f->file_.size();
  if (size < 8) fail(path, ": file is ", size, " bytes, too short for the 8-byte header length");
  f->map_ = f->file_.data();
  f->size_ = size;

  const uint64_t header_len = read_u64_le(f->map_);
  if (header_len > kMaxHeaderBytes) {
    fail(path, ": header length ", header_len, " is over the limit of ", kMaxHeaderBytes, " bytes");
  }
  if (header_len > size - 8) {
    fail(path, ": header length ", header_len, " exceeds the ", size - 8,
         " bytes after the length field");
  }
  const char* hbegin = reinterpret_cast<const char*>(f->map_ + 8);
  json header;
  try {
    header = json::parse(hbegin, hbegin + header_len);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(path, ": header is not a JSON object");

  const uint8_t* data = f->map_ + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail(path, ": __metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(path, ": __metadata__ field ", m.key(), " is not a string");
        f->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    f->tensors_[name] = parse_entry(cat(path, ": tensor ", name), name, *it, data, data_size);
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

const StTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

SafetensorsSet SafetensorsSet::open_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsSet set;
  set.dir_ = dir;
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) fail(dir, ": not a folder");

  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;  // from the index, when there is one
  const fs::path index_path = root / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    const std::string ip = index_path.string();
    std::ifstream in(ip, std::ios::binary);
    if (!in) fail(ip, ": cannot open");
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail(ip, ": not valid JSON: ", e.what());
    }
    if (!index.is_object()) fail(ip, ": not a JSON object");
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) fail(ip, ": weight_map missing or not an object");
    std::set<std::string> shard_names;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string()) fail(ip, ": weight_map entry ", it.key(), " is not a string");
      const std::string shard = it->get<std::string>();
      const fs::path sp(shard);
      if (shard.empty() || sp.is_absolute() ||
          std::any_of(sp.begin(), sp.end(), [](const fs::path& c) { return c == ".."; })) {
        fail(ip, ": weight_map entry ", it.key(), " names the file '", shard,
             "', which is not inside the folder");
      }
      weight_map[it.key()] = shard;
      shard_names.insert(shard);
    }
    if (shard_names.empty()) fail(ip, ": weight_map is empty");
    for (const std::string& s : shard_names) files.push_back((root / s).string());
  } else if (fs::exists(root / "model.safetensors", ec)) {
    files.push_back((root / "model.safetensors").string());
  } else {
    for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
      if (e.path().extension() == ".safetensors" && e.is_regular_file(ec)) {
        files.push_back(e.path().string());
      }
    }
    if (ec) fail(dir, ": cannot list the folder: ", ec.message());
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      fail(dir, ": no model.safetensors, model.safetensors.index.json or *.safetensors file");
    }
  }

  for (const std::string& path : files) {
    set.files_.push_back(SafetensorsFile::open(path));
    const size_t fi = set.files_.size() - 1;
    for (const auto& [name, t] : set.files_.back()->tensors()) {
      auto [it, inserted] = set.index_.emplace(name, fi);
      if (!inserted) {
        fail(dir, ": tensor ", name, " is in both ", base_name(set.files_[it->second]->path()),
             " and ", base_name(path));
      }
    }
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = set.index_.find(name);
    if (it == set.index_.end()) {
      fail((root / "model.safetensors.index.json").string(), ": tensor ", name, ": not in ", shard);
    }
    if (fs::path(set.files_[it->second]->path()) != root / shard) {
      fail((root / "model.safetensors.index.json").string(), ": tensor ", name,
           ": the index names ", shard, " but it is in ",
           base_name(set.files_[it->second]->path()));
    }
  }
  return set;
}

const StTensor* SafetensorsSet::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : files_[it->second]->find(name);
}

const StTensor& SafetensorsSet::get(const std::string& name) const {
  const StTensor* t = find(name);
  if (t == nullptr) fail(dir_, ": missing tensor ", name);
  return *t;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, fi] : index_) out.push_back(name);
  return out;
}

const std::string& SafetensorsSet::file_of(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(dir_, ": missing tensor ", name);
  return files_[it->second]->path();
}

}  // namespace trit::engine
