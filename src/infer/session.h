// An inference session: one sequence's KV cache over a model, fed token runs of any length
// (split into batches), returning logits.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/lora_set.h"

namespace trit::engine {

class Session {
 public:
  // n_ctx: the most positions this session holds; n_batch: tokens per forward pass. The
  // backend must outlive the session. Without adapters in opts, the model's embedded adapter
  // (if any) applies; callers that give adapters include it themselves.
  Session(const Model& model, int64_t n_ctx, Backend& backend, ForwardOptions opts = {},
          int64_t n_batch = 64);
  // On the CPU, with the threads of pool.
  Session(const Model& model, int64_t n_ctx, ThreadPool& pool, ForwardOptions opts = {},
          int64_t n_batch = 64);
  ~Session();

  // Appends tokens at positions n_past() ...; logits gets the last token's logits (n_vocab),
  // or every token's ((n, n_vocab)) when all_logits.
  void eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
            bool all_logits = false);

  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return cache_.n_ctx; }
  void truncate(int64_t n);  // forget positions n and later
  const Model& model() const { return model_; }

 private:
  void init(int64_t n_ctx, int64_t n_batch);

  const Model& model_;
  std::unique_ptr<Backend> owned_backend_;
  Backend& backend_;
  ForwardOptions opts_;
  std::unique_ptr<DeviceAdapter> embedded_;  // the model's own adapter, when it applies
  LoraSet embedded_set_;
  KvCache cache_;
  ForwardArena arena_;
  int64_t n_past_ = 0;
};

}  // namespace trit::engine
