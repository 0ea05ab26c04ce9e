// How much memory a run or a fine-tune on the CPU needs, before it starts (`trit info`, the
// checks of --mem-budget): the parts a process holds at its peak, each counted from the model's
// shape and the run's settings the way the code allocates them. The process's own part (the
// program, its libraries, thread stacks, allocator slack) is a constant measured on the 2-core
// Linux machine of docs/PERF.md; `trit bench` measures what the estimate predicts.
#pragma once

#include <cstdint>
#include <string>

#include "backend/backend.h"
#include "model/hparams.h"

namespace trit::engine {

struct MemoryEstimate {
  uint64_t process = 0;      // the program and its libraries, thread stacks
  uint64_t weights = 0;      // the weights a pass reads (mapped pages) and copies made at load
  uint64_t tokenizer = 0;    // the vocabulary's tables
  uint64_t kv_cache = 0;     // generation: the session's keys and values
  uint64_t activations = 0;  // the pass's tensors, the head's chunk of logits, kernel scratch
  uint64_t adapter = 0;      // fine-tuning: LoRA values, gradients and two AdamW moments
  uint64_t total() const {
    return process + weights + tokenizer + kv_cache + activations + adapter;
  }
};

// The process's own part (measured; see above): `trit --version` alone holds 10.2 MiB; a CPU
// run of the tiny preset peaks 2.2-3.0 MiB above its counted parts plus 10.2 MiB.
inline constexpr uint64_t kProcessBytes = 13ull << 20;

// A fine-tune on the CPU streams its weights (each block's file pages released after its pass,
// model/forward.h) only where that keeps at least this much out of the resident set: the
// pages brought back cost a step time (125m, two cores: 15%, for 21 MiB), worth it where
// the saving is large (1b: 3-5% for 267 MiB).
inline constexpr uint64_t kStreamSavingBytes = 64ull << 20;
// The weights a fine-tune holds at once, given every weight resident (all) and the streamed
// working set (the largest pair of neighbouring blocks, the head counting as one).
inline uint64_t finetune_weight_bytes(uint64_t all, uint64_t streamed) {
  return all >= streamed + kStreamSavingBytes ? streamed : all;
}

// Parameters of a LoRA adapter of this rank on these targets ("all", or q, k, v, o, gate, up,
// down, head); throws on an unknown target.
uint64_t lora_parameters(const HParams& hp, int64_t rank, const std::string& targets);

// Generation with a session of n_ctx positions whose passes take up to n_batch tokens, weights
// the bytes the model keeps resident (Model::resident_run_bytes without the process, or a
// file's tensors).
MemoryEstimate run_memory(const HParams& hp, uint64_t weights, int64_t n_ctx, int64_t n_batch,
                          KvType kv);

// A fine-tune whose passes take up to ctx tokens (the CPU's default: one sequence of ctx, or
// shorter ones packed up to ctx, so the batch size does not change it; a pass of more packed
// tokens needs what a ctx of that many does) with gradient checkpointing on or off.
// `threads`: the pool's threads, each of which keeps kernel scratch of its own.
MemoryEstimate finetune_memory(const HParams& hp, uint64_t weights, int64_t ctx, int64_t rank,
                               const std::string& targets, bool checkpointing, float dropout = 0,
                               int threads = 1);

}  // namespace trit::engine
