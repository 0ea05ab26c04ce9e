// An inference session: one sequence's KV cache over a model, fed token runs of any length
// (split into batches), returning logits.
#pragma once

#include <cstdint>
#include <vector>

#include "model/forward.h"

namespace trit {

class Session {
 public:
  // n_ctx: the most positions this session holds; n_batch: tokens per forward pass.
  Session(const Model& model, int64_t n_ctx, ThreadPool& pool, ForwardOptions opts = {},
          int64_t n_batch = 64);

  // Appends tokens at positions n_past() ...; logits gets the last token's logits (n_vocab),
  // or every token's ((n, n_vocab)) when all_logits.
  void eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
            bool all_logits = false);

  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return cache_.n_ctx; }
  void truncate(int64_t n);  // forget positions n and later
  const Model& model() const { return model_; }

 private:
  const Model& model_;
  ThreadPool& pool_;
  ForwardOptions opts_;
  KvCache cache_;
  ForwardArena arena_;
  int64_t n_past_ = 0;
};

}  // namespace trit
