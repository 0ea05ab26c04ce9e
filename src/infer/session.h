// An inference session: one sequence's KV cache over a model, fed token runs of any length
// (split into batches), returning logits. It remembers the tokens its cache holds, so a new
// prompt that shares a prefix with them reuses the cache for that prefix.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
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
  // or every token's ((n, n_vocab)) when all_logits. With cancel set between two batches of
  // the tokens, returns false with the batches so far in the cache and no logits.
  bool eval(const std::vector<int32_t>& tokens, std::vector<float>& logits, bool all_logits = false,
            const std::atomic<bool>* cancel = nullptr);

  int64_t n_past() const { return int64_t(tokens_.size()); }
  int64_t n_ctx() const { return cache_.n_ctx; }
  const std::vector<int32_t>& tokens() const { return tokens_; }  // what the cache holds
  void truncate(int64_t n);                                       // forget positions n and later
  // Keeps the longest prefix of the cache that `tokens` starts with, at most tokens.size() - 1
  // positions (so at least one token is left to compute logits from), and returns its length:
  // tokens [n, end) are what the caller still has to evaluate.
  int64_t reuse_prefix(const std::vector<int32_t>& tokens);
  // The adapters of the passes from now on (null: none). The cache stays: callers truncate it
  // when the adapters change what it holds.
  void set_lora(const LoraSet* lora) { opts_.lora = lora; }
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
  std::vector<int32_t> tokens_;
};

}  // namespace trit::engine
