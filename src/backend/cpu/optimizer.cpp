// The optimizer's ops on the CPU: sums of squares for gradient clipping, and AdamW.
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace trit::engine {

void CpuBackend::sum_squares(std::span<const DeviceTensor* const> ts, double* out) {
  for (size_t i = 0; i < ts.size(); ++i) {
    const float* x = cpu_data(*ts[i]);
    double sq = 0.0;
    for (int64_t j = 0; j < ts[i]->rows() * ts[i]->cols(); ++j) sq += double(x[j]) * double(x[j]);
    out[i] = sq;
  }
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
  adamw_update(cpu_data(p), cpu_data(g), cpu_data(m), cpu_data(v), p.rows() * p.cols(), k,
               grad_scale);
}

}  // namespace trit::engine
