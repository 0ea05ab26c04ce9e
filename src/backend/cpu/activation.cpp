// The gated activations relu2(gate) * up and silu(gate) * up, forward and backward: the
// reference (ops.h) and the CPU backend's ops.
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

void gated_act_forward(const float* gate, const float* up, int64_t n, Activation act, float* out) {
  if (act == Activation::Relu2) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = gate[i] > 0 ? gate[i] : 0.0f;
      out[i] = r * r * up[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

void gated_act_backward(float* dgate, float* dup, const float* dout, const float* gate,
                        const float* up, int64_t n, Activation act) {
  if (act == Activation::Relu2) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = gate[i] > 0 ? gate[i] : 0.0f;
      dgate[i] += 2.0f * r * up[i] * dout[i];
      dup[i] += r * r * dout[i];
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
