// The default compositions of Backend ops that a device may fuse.
#include "backend/backend.h"

namespace trit {

void Backend::rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                            DeviceTensor& k_cache, DeviceTensor& v_cache, int64_t n, int64_t pos0,
                            const HParams& hp) {
  rope(q, n, hp.n_head, hp, pos0);
  rope(k, n, hp.n_head_kv, hp, pos0);
  store_kv(k_cache, k, n, pos0);
  store_kv(v_cache, v, n, pos0);
}

}  // namespace trit
