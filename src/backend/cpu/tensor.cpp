// The CPU backend's tensors: host memory, and the row copies and sums over them.
#include <algorithm>
#include <cstdlib>
#include <new>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

void check_rows(const DeviceTensor& t, int64_t row0, int64_t n, const char* op) {
  if (row0 < 0 || n < 0 || row0 + n > t.rows()) {
    fail(op, ": rows ", row0, "..", row0 + n, " of tensor '", t.name(), "' with ", t.rows(),
         " rows");
  }
}

CpuTensor::CpuTensor(std::string name, int64_t rows, int64_t cols, bool f16)
    : DeviceTensor(std::move(name), rows, cols, f16) {
  const size_t count = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  owned_.reset(std::calloc(count > 0 ? count : 1, f16 ? sizeof(uint16_t) : sizeof(float)));
  if (!owned_) throw std::bad_alloc();
  if (f16) {
    half_ = static_cast<uint16_t*>(owned_.get());
  } else {
    data_ = static_cast<float*>(owned_.get());
  }
}

CpuTensor::CpuTensor(std::string name, int64_t rows, int64_t cols, float* data)
    : DeviceTensor(std::move(name), rows, cols), data_(data) {}

namespace {

CpuTensor& cpu_tensor(DeviceTensor& t) {
  auto* c = dynamic_cast<CpuTensor*>(&t);
  if (!c) fail("cpu backend: tensor '", t.name(), "' belongs to another backend");
  return *c;
}

}  // namespace

float* cpu_data(DeviceTensor& t) {
  CpuTensor& c = cpu_tensor(t);
  if (t.f16()) fail("cpu backend: tensor '", t.name(), "' holds f16 values; this op takes f32");
  return c.data();
}

const float* cpu_data(const DeviceTensor& t) {
  return cpu_data(const_cast<DeviceTensor&>(t));
}

uint16_t* cpu_half(DeviceTensor& t) {
  CpuTensor& c = cpu_tensor(t);
  if (!t.f16()) fail("cpu backend: tensor '", t.name(), "' holds f32 values, not f16");
  return c.half_data();
}

const uint16_t* cpu_half(const DeviceTensor& t) {
  return cpu_half(const_cast<DeviceTensor&>(t));
}

std::string CpuBackend::description() const {
  return cat("cpu: ", cpu_kernels_name(), ", ", pool_.size(), " threads");
}

std::unique_ptr<DeviceTensor> CpuBackend::tensor(std::string_view name, int64_t rows, int64_t cols,
                                                 TensorUse use) {
  if (rows < 0 || cols < 0) fail("cpu backend: tensor '", name, "' of ", rows, " x ", cols);
  return std::make_unique<CpuTensor>(std::string(name), rows, cols, use == TensorUse::KvCacheF16);
}

std::unique_ptr<DeviceTensor> CpuBackend::host_view(std::string_view name, float* data,
                                                    int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0 || (!data && rows * cols > 0)) {
    fail("cpu backend: view '", name, "' of ", rows, " x ", cols);
  }
  return std::make_unique<CpuTensor>(std::string(name), rows, cols, data);
}

// A view written from or read into its own memory copies nothing (std::copy onto itself would
// be an overlapping copy). An f16 tensor converts.
void CpuBackend::write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) {
  check_rows(t, row0, n, "write");
  if (t.f16()) {
    float_to_half(src, cpu_half(t) + row0 * t.cols(), n * t.cols());
    return;
  }
  float* d = cpu_data(t) + row0 * t.cols();
  if (d != src) std::copy(src, src + n * t.cols(), d);
}

void CpuBackend::read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) {
  check_rows(t, row0, n, "read");
  if (t.f16()) {
    half_to_float(cpu_half(t) + row0 * t.cols(), dst, n * t.cols());
    return;
  }
  const float* s = cpu_data(t) + row0 * t.cols();
  if (s != dst) std::copy(s, s + n * t.cols(), dst);
}

void CpuBackend::zero(DeviceTensor& t) {
  const int64_t cols = t.cols();
  const auto fill_rows = [&](int64_t r0, int64_t r1, int) {
    if (t.f16()) {
      std::fill(cpu_half(t) + r0 * cols, cpu_half(t) + r1 * cols, uint16_t(0));
    } else {
      std::fill(cpu_data(t) + r0 * cols, cpu_data(t) + r1 * cols, 0.0f);
    }
  };
  // A backward pass clears each gradient of a block (tokens x up to the feed-forward width)
  // before it accumulates: over the threads, except where a dispatch costs more than the fill.
  if (t.rows() * cols < (int64_t(1) << 16)) {
    fill_rows(0, t.rows(), 0);
    return;
  }
  pool_.parallel_for(t.rows(), fill_rows);
}

void CpuBackend::copy(DeviceTensor& dst, const DeviceTensor& src, int64_t n) {
  if (dst.cols() != src.cols() || n > dst.rows() || n > src.rows() || dst.f16() != src.f16()) {
    fail("copy: ", n, " rows of '", src.name(), "' (", src.rows(), " x ", src.cols(),
         src.f16() ? " f16" : "", ") to '", dst.name(), "' (", dst.rows(), " x ", dst.cols(),
         dst.f16() ? " f16" : "", ")");
  }
  if (src.f16()) {
    std::copy(cpu_half(src), cpu_half(src) + n * src.cols(), cpu_half(dst));
    return;
  }
  std::copy(cpu_data(src), cpu_data(src) + n * src.cols(), cpu_data(dst));
}

void CpuBackend::add(DeviceTensor& y, const DeviceTensor& x, int64_t n) {
  float* a = cpu_data(y);
  const float* b = cpu_data(x);
  pool_.parallel_for(
      n * y.cols(),
      [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) a[i] += b[i];
      },
      16);
}

}  // namespace trit::engine
