// Batched passes of several sequences (model_forward_batch) against each sequence run alone
// through a Session: the scenario shared by the CPU's and the Vulkan backend's tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "infer/session.h"
#include "model/forward.h"
#include "model/lora_set.h"
#include "model/model.h"

namespace trit::engine::test {

// A sequence: its prompt, then tokens fed one at a time, with its adapters (null: none).
struct BatchedSequence {
  std::vector<int32_t> prompt;
  std::vector<int32_t> decoded;
  const LoraSet* lora = nullptr;
};

// Each step: which sequences take part, in row order, and how many of their next tokens each
// feeds (a prompt may be split over steps). A sequence's logits are taken when a step reaches
// the end of its prompt and at every token after it.
struct BatchStepPart {
  size_t seq = 0;
  int64_t n = 1;
};
using BatchSchedule = std::vector<std::vector<BatchStepPart>>;

// Every sequence's logits ((1 + decoded, n_vocab) each), computed in the batched steps; with
// `pooled`, the caches are rows of one pool (KvCache::pool, sequence i in slot n - 1 - i, so
// that row order and slot order differ), else tensors of their own.
inline std::vector<std::vector<float>> batched_logits(const Model& m, Backend& be,
                                                      const std::vector<BatchedSequence>& seqs,
                                                      const BatchSchedule& schedule, bool act_quant,
                                                      int64_t n_ctx, bool pooled = false) {
  const int64_t V = m.hparams().n_vocab;
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<int64_t> fed(seqs.size(), 0);
  std::vector<std::vector<float>> out(seqs.size());
  std::vector<KvCache> pool;
  if (pooled) pool = KvCache::pool(be, m.hparams(), n_ctx, int64_t(seqs.size()));
  for (size_t i = 0; i < seqs.size(); ++i) {
    caches.push_back(std::make_unique<KvCache>());
    if (pooled) {
      *caches.back() = pool[seqs.size() - 1 - i];
    } else {
      caches.back()->init(be, m.hparams(), n_ctx);
    }
  }
  ForwardArena arena;
  arena.init(be, m.hparams(), 32);
  for (const auto& step : schedule) {
    std::vector<int32_t> tokens;
    std::vector<BatchSeq> parts;
    std::vector<size_t> wants;
    for (const BatchStepPart& p : step) {
      const BatchedSequence& s = seqs[p.seq];
      std::vector<int32_t> all = s.prompt;
      all.insert(all.end(), s.decoded.begin(), s.decoded.end());
      const int64_t pos0 = fed[p.seq];
      tokens.insert(tokens.end(), all.begin() + pos0, all.begin() + pos0 + p.n);
      fed[p.seq] += p.n;
      const bool logits = fed[p.seq] >= int64_t(s.prompt.size());
      parts.push_back({caches[p.seq].get(), p.n, pos0, s.lora, logits});
      if (logits) wants.push_back(p.seq);
    }
    std::vector<float> logits(wants.size() * size_t(V));
    model_forward_batch(m, tokens.data(), parts, arena, be, act_quant, logits.data());
    for (size_t w = 0; w < wants.size(); ++w) {
      out[wants[w]].insert(out[wants[w]].end(), logits.begin() + int64_t(w) * V,
                           logits.begin() + int64_t(w + 1) * V);
    }
  }
  return out;
}

// The same logits, each sequence alone in a Session on `be`.
inline std::vector<std::vector<float>> separate_logits(const Model& m, Backend& be,
                                                       const std::vector<BatchedSequence>& seqs,
                                                       bool act_quant, int64_t n_ctx) {
  std::vector<std::vector<float>> out;
  for (const BatchedSequence& s : seqs) {
    Session session(m, n_ctx, be, ForwardOptions{act_quant, s.lora}, 64);
    std::vector<float> logits;
    session.eval(s.prompt, logits);
    std::vector<float> all = logits;
    for (int32_t t : s.decoded) {
      session.eval({t}, logits);
      all.insert(all.end(), logits.begin(), logits.end());
    }
    out.push_back(all);
  }
  return out;
}

// Four sequences: none, adapter set a (twice, adjacent in some steps, so their head runs
// merge) and set b; prompts split over steps, prompts beside decoding rows, sequences joining
// and leaving.
inline std::vector<BatchedSequence> batch_sequences(const LoraSet* a, const LoraSet* b) {
  return {{{256, 3, 77, 140, 9, 300, 41, 12, 5}, {17, 33}, nullptr},
          {{256, 8, 8, 200}, {4, 61}, a},
          {{256, 90, 2, 14, 400, 7}, {120, 3}, a},
          {{256, 31, 6}, {80, 80}, b}};
}
inline BatchSchedule batch_schedule() {
  return {{{0, 5}, {1, 4}},
          {{1, 1}, {0, 4}, {2, 6}},
          {{1, 1}, {2, 1}, {0, 1}, {3, 3}},
          {{2, 1}, {0, 1}, {3, 1}},
          {{3, 1}}};
}

}  // namespace trit::engine::test
