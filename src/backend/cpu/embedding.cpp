// The CPU backend's embedding lookup.
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

void CpuBackend::embedding(DeviceTensor& out, const FloatMatrix& table, const int32_t* tokens,
                           int64_t n) {
  float* o = cpu_data(out);
  for (int64_t t = 0; t < n; ++t) float_matrix_row(table, tokens[t], o + t * out.cols());
}

}  // namespace trit::engine
