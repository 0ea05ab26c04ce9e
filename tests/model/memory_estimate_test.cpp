// model/memory_estimate: the parts it counts from the shape against what the code makes (the
// adapter lora_init makes, the caches a session makes). Its totals against measured peak
// memory are bench/memory_prediction.sh's job (an optimised build; CI runs it).
#include "model/memory_estimate.h"

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "model/forward.h"
#include "support/models.h"
#include "train/lora_init.h"

namespace trit::engine {
namespace {

TEST(MemoryEstimate, AdapterIsWhatLoraInitMakes) {
  CreateOptions o = test::tiny_options(3);
  o.hp.n_ff = 700;  // widths that differ everywhere
  for (const char* targets : {"all", "q,v", "all,head", "down"}) {
    for (int64_t rank : {1, 8, 16}) {
      const LoraAdapter a = lora_init(o.hp, targets, rank, 16.0f, false, 1);
      uint64_t params = 0;
      for (const auto& [name, l] : a.layers) params += l.a.size() + l.b.size();
      EXPECT_EQ(lora_parameters(o.hp, rank, targets), params) << targets << " rank " << rank;
      EXPECT_EQ(finetune_memory(o.hp, 0, 64, rank, targets, true).adapter, 16 * params);
    }
  }
  EXPECT_THROW(lora_parameters(o.hp, 8, "q,x"), Error);
}

TEST(MemoryEstimate, KvCacheIsWhatASessionMakes) {
  const HParams hp = test::tiny_options(3).hp;
  ThreadPool pool(1);
  CpuBackend cpu(pool);
  for (KvType type : {KvType::F32, KvType::F16}) {
    KvCache cache;
    cache.init(cpu, hp, 300, type);
    uint64_t bytes = 0;
    for (const auto& t : cache.k) bytes += uint64_t(t->rows() * t->cols()) * (t->f16() ? 2 : 4);
    for (const auto& t : cache.v) bytes += uint64_t(t->rows() * t->cols()) * (t->f16() ? 2 : 4);
    EXPECT_EQ(run_memory(hp, 0, 300, 64, type).kv_cache, bytes);
  }
  // Checkpointing keeps one block's activations instead of every block's.
  EXPECT_LT(finetune_memory(hp, 0, 128, 8, "all", true).activations,
            finetune_memory(hp, 0, 128, 8, "all", false).activations);
}

}  // namespace
}  // namespace trit::engine
