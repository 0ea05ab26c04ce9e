// rms_norm forward and backward: the reference (ops.h) and the CPU backend's ops.
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

namespace {

// sum_i a_i * b_i * c_i (c null: 1) in double, element i into sum i % 4 in order, then
// (s0 + s1) + (s2 + s3): one chain of dependent adds cost a row of 2,048 about 2.5 us.
double sum4(const float* a, const float* b, const float* c, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      s[k] += c ? double(a[i + k]) * b[i + k] * c[i + k] : double(a[i + k]) * b[i + k];
    }
  }
  for (int k = 0; i < n; ++i, ++k) s[k] += c ? double(a[i]) * b[i] * c[i] : double(a[i]) * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

}  // namespace

void rms_norm_forward(const float* x, const float* g, int64_t n_rows, int64_t n, float eps,
                      float* y, float* rstd) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const double ss = sum4(xr, xr, nullptr, n);
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
    const double dot = sum4(dyr, g, xr, n);  // sum_i dy_i g_i x_i
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
