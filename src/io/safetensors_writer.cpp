#include "io/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"

namespace trit::engine {
namespace {

std::string u64_le(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return out;
}

}  // namespace

void SafetensorsWriter::add(std::string name, StDType dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  if (name.empty() || name == "__metadata__") {
    fail("safetensors writer: tensor name '", name, "' is not allowed");
  }
  for (const Entry& e : tensors_) {
    if (e.name == name) fail("safetensors writer: tensor ", name, ": duplicate name");
  }
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("safetensors writer: tensor ", name, ": negative dimension ", d);
    if (d != 0 && n > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(d)) {
      fail("safetensors writer: tensor ", name, ": too many elements");
    }
    n *= uint64_t(d);
  }
  const uint64_t need = n * uint64_t(st_dtype_size(dtype));
  if (need != nbytes) {
    fail("safetensors writer: tensor ", name, ": ", nbytes, " bytes given, ", st_dtype_name(dtype),
         " of ", n, " elements needs ", need);
  }
  Entry e{std::move(name), dtype, std::move(shape), std::vector<uint8_t>(nbytes)};
  if (nbytes > 0) std::memcpy(e.bytes.data(), data, nbytes);
  tensors_.push_back(std::move(e));
}

void SafetensorsWriter::add_f32(std::string name, std::vector<int64_t> shape, const float* data,
                                StDType as) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d < 0 ? 0 : d;
  switch (as) {
    case StDType::F32:
      add(std::move(name), as, std::move(shape), data, size_t(n) * 4);
      return;
    case StDType::F16:
    case StDType::BF16: {
      std::vector<uint16_t> h(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        h[size_t(i)] = as == StDType::F16 ? f32_to_fp16(data[i]) : f32_to_bf16(data[i]);
      }
      add(std::move(name), as, std::move(shape), h.data(), h.size() * 2);
      return;
    }
    default:
      fail("safetensors writer: tensor ", name,
           ": f32 values can be stored as F32, F16 or BF16, not ", st_dtype_name(as));
  }
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::string SafetensorsWriter::header() const {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const Entry& e : tensors_) {
    const uint64_t end = offset + e.bytes.size();
    h[e.name] = {
        {"dtype", st_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void SafetensorsWriter::write(const std::string& path) const {
  const std::string head = header();
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    fail(path, ": cannot create ", tmp, ": ", std::strerror(errno));
  }
  const std::string len = u64_le(head.size());
  bool ok = std::fwrite(len.data(), 1, len.size(), f) == len.size() &&
            std::fwrite(head.data(), 1, head.size(), f) == head.size();
  for (const Entry& e : tensors_) {
    if (!ok) break;
    ok = e.bytes.empty() || std::fwrite(e.bytes.data(), 1, e.bytes.size(), f) == e.bytes.size();
  }
  int err = ok ? 0 : errno;
  if (std::fflush(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(tmp.c_str());
    fail(path, ": cannot write ", tmp, ": ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    fail(path, ": cannot rename ", tmp, " into place: ", std::strerror(err));
  }
}

}  // namespace trit::engine
