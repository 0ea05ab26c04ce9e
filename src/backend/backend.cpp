// The default compositions of the fused Backend ops, which a device overrides where one kernel
// does the work of several.
#include "backend/backend.h"

#include "core/error.h"

namespace trit::engine {

void Backend::norm_linear(const NormOp& norm, std::span<const LinearOp> ops, int64_t n,
                          const LinearMode& mode, const LinearEpilogue& epilogue) {
  rms_norm(norm, n);
  linear(ops, *norm.y, n, mode);
  switch (epilogue.kind) {
    case LinearEpilogue::Kind::None:
      break;
    case LinearEpilogue::Kind::Gated:
      if (ops.size() != 2) fail("norm_linear: a gated epilogue takes 2 ops, got ", ops.size());
      gated_act(*epilogue.out, *ops[0].y, *ops[1].y, n, epilogue.act);
      break;
    case LinearEpilogue::Kind::Residual:
      if (ops.size() != 1) fail("norm_linear: a residual epilogue takes 1 op, got ", ops.size());
      add(*epilogue.residual, *ops[0].y, n);
      break;
  }
}

void Backend::rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                            DeviceTensor& k_cache, DeviceTensor& v_cache,
                            std::span<const SeqRows> seqs, const AttnShape& shape) {
  for (const SeqRows& s : seqs) {
    rope(q, s.row0, s.n, shape.n_head, shape, s.pos0);
    rope(k, s.row0, s.n, shape.n_head_kv, shape, s.pos0);
    if (&k_cache != &k) store_kv(k_cache, k, s.row0, s.n, s.base + s.pos0);
    if (&v_cache != &v) store_kv(v_cache, v, s.row0, s.n, s.base + s.pos0);
  }
}

}  // namespace trit::engine
