// rms_norm forward and backward: the reference (ops.h) and the CPU backend's ops.
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

void rms_norm_forward(const float* x, const float* g, int64_t n_rows, int64_t n, float eps,
                      float* y, float* rstd) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float s = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * s) * g[i];
    if (rstd) rstd[r] = s;
  }
}

void rms_norm_backward(float* dx, const float* dy, const float* x, const float* g,
                       const float* rstd, int64_t n_rows, int64_t n, float* dg) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;    // (n)
    const float* dyr = dy + r * n;  // (n)
    float* dxr = dx + r * n;        // (n)
    const float s = rstd[r];
    double dot = 0;  // sum_i dy_i g_i x_i
    for (int64_t i = 0; i < n; ++i) dot += double(dyr[i]) * g[i] * xr[i];
    const float c = float(dot * s * s * s / double(n));
    for (int64_t i = 0; i < n; ++i) dxr[i] += s * g[i] * dyr[i] - c * xr[i];
    if (dg) {
      for (int64_t i = 0; i < n; ++i) dg[i] += dyr[i] * xr[i] * s;
    }
  }
}

void CpuBackend::rms_norm(const NormOp& op, int64_t n) {
  const int64_t cols = op.x->cols();
  // Rows are independent: split over the threads (a batch of decoding sequences).
  pool_.parallel_for(n, [&](int64_t r0, int64_t r1, int) {
    rms_norm_forward(cpu_data(*op.x) + r0 * cols, op.g, r1 - r0, cols, op.eps,
                     cpu_data(*op.y) + r0 * cols, op.rstd ? cpu_data(*op.rstd) + r0 : nullptr);
  });
}

void CpuBackend::rms_norm_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& x,
                                   const float* g, const DeviceTensor& rstd, int64_t n) {
  const int64_t cols = x.cols();
  pool_.parallel_for(n, [&](int64_t r0, int64_t r1, int) {
    engine::rms_norm_backward(cpu_data(dx) + r0 * cols, cpu_data(dy) + r0 * cols,
                              cpu_data(x) + r0 * cols, g, cpu_data(rstd) + r0, r1 - r0, cols);
  });
}

}  // namespace trit::engine
