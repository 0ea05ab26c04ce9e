// The optimizer's ops on the CPU: sums of squares for gradient clipping, and AdamW.
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace trit::engine {

void CpuBackend::sum_squares(std::span<const DeviceTensor* const> ts, double* out) {
  // One tensor's sum in order on one thread (the same bits at any thread count).
  pool_.parallel_for(int64_t(ts.size()), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* x = cpu_data(*ts[size_t(i)]);
      double sq = 0.0;
      for (int64_t j = 0; j < ts[size_t(i)]->rows() * ts[size_t(i)]->cols(); ++j)
        sq += double(x[j]) * double(x[j]);
      out[i] = sq;
    }
  });
}

void CpuBackend::adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
                       const AdamWScalars& k, float grad_scale) {
  for (const DeviceTensor* t :
       {&g, static_cast<const DeviceTensor*>(&m), static_cast<const DeviceTensor*>(&v)}) {
    if (t->rows() != p.rows() || t->cols() != p.cols()) {
      fail("adamw: '", t->name(), "' is ", t->rows(), " x ", t->cols(), ", its parameter '",
           p.name(), "' ", p.rows(), " x ", p.cols());
    }
  }
  // Each element on its own: split over the threads in cache lines.
  float *pp = cpu_data(p), *mm = cpu_data(m), *vv = cpu_data(v);
  const float* gg = cpu_data(g);
  pool_.parallel_for(
      p.rows() * p.cols(),
      [&](int64_t i0, int64_t i1, int) {
        adamw_update(pp + i0, gg + i0, mm + i0, vv + i0, i1 - i0, k, grad_scale);
      },
      16);
}

}  // namespace trit::engine
