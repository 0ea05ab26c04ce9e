// The gated activations relu2(gate) * up and silu(gate) * up, forward and backward: the
// reference (ops.h) and the CPU backend's ops.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

namespace {

// relu(g) = g > 0 ? g : 0 (NaN and -0 give +0) for a run of at most kRun values. A loop of its
// own, so that the compiler makes it a vector select: folded into the products that follow,
// it became a branch on the sign of every value, half of them mispredicted.
constexpr int64_t kRun = 64;
inline void relu_run(const float* __restrict g, int64_t n, float* __restrict r) {
  for (int64_t j = 0; j < n; ++j) r[j] = g[j] > 0 ? g[j] : 0.0f;
}

}  // namespace

void gated_act_forward(const float* __restrict gate, const float* __restrict up, int64_t n,
                       Activation act, float* __restrict out) {
  if (act == Activation::Relu2) {
    float r[kRun];
    for (int64_t i0 = 0; i0 < n; i0 += kRun) {
      const int64_t m = std::min(kRun, n - i0);
      relu_run(gate + i0, m, r);
      for (int64_t j = 0; j < m; ++j) out[i0 + j] = r[j] * r[j] * up[i0 + j];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

void gated_act_backward(float* __restrict dgate, float* __restrict dup,
                        const float* __restrict dout, const float* __restrict gate,
                        const float* __restrict up, int64_t n, Activation act) {
  if (act == Activation::Relu2) {
    float r[kRun];
    for (int64_t i0 = 0; i0 < n; i0 += kRun) {
      const int64_t m = std::min(kRun, n - i0);
      relu_run(gate + i0, m, r);
      for (int64_t j = 0; j < m; ++j) {
        const int64_t i = i0 + j;
        dgate[i] += 2.0f * r[j] * up[i] * dout[i];
        dup[i] += r[j] * r[j] * dout[i];
      }
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      const float sig = 1.0f / (1.0f + std::exp(-g));
      dgate[i] += sig * (1.0f + g * (1.0f - sig)) * up[i] * dout[i];
      dup[i] += g * sig * dout[i];
    }
  }
}

void CpuBackend::gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up,
                           int64_t n, Activation act) {
  // Each value on its own: split over the threads in cache lines (silu's exp is the cost).
  const float *g = cpu_data(gate), *u = cpu_data(up);
  float* o = cpu_data(out);
  pool_.parallel_for(
      n * gate.cols(),
      [&](int64_t i0, int64_t i1, int) { gated_act_forward(g + i0, u + i0, i1 - i0, act, o + i0); },
      16);
}

void CpuBackend::gated_act_backward(DeviceTensor& dgate, DeviceTensor& dup,
                                    const DeviceTensor& dout, const DeviceTensor& gate,
                                    const DeviceTensor& up, int64_t n, Activation act) {
  float *dg = cpu_data(dgate), *du = cpu_data(dup);
  const float *d = cpu_data(dout), *g = cpu_data(gate), *u = cpu_data(up);
  pool_.parallel_for(
      n * gate.cols(),
      [&](int64_t i0, int64_t i1, int) {
        engine::gated_act_backward(dg + i0, du + i0, d + i0, g + i0, u + i0, i1 - i0, act);
      },
      16);
}

}  // namespace trit::engine
