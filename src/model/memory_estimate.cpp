#include "model/memory_estimate.h"

#include <algorithm>

#include "core/lora.h"

namespace trit::engine {
namespace {

constexpr uint64_t kFloatBytes = 4;
// The vocabulary's tables per token: its text and the maps from text to id and back (measured
// against a 32,000 and a 128,256 token vocabulary).
constexpr uint64_t kTokenizerBytesPerToken = 96;
constexpr int64_t kHeadChunk = 32;  // tokens whose logits a training pass holds at once

uint64_t tokenizer_bytes(const HParams& hp) {
  return uint64_t(hp.n_vocab) * kTokenizerBytesPerToken;
}

// The widest input of a block's linear layers (the int8 activations' scratch).
int64_t widest_input(const HParams& hp) {
  return std::max(hp.n_embd, hp.n_ff);
}

}  // namespace

uint64_t lora_parameters(const HParams& hp, int64_t rank, const std::string& targets) {
  uint64_t per_rank = 0;
  for (const std::string& s : lora_target_suffixes(targets)) {
    if (s == "output") {
      per_rank += uint64_t(hp.n_embd + hp.n_vocab);
      continue;
    }
    const auto [n_in, n_out] = block_linear_shape(hp, s);
    per_rank += uint64_t(n_in + n_out) * uint64_t(hp.n_layer);
  }
  return per_rank * uint64_t(std::max<int64_t>(rank, 0));
}

MemoryEstimate run_memory(const HParams& hp, uint64_t weights, int64_t n_ctx, int64_t n_batch,
                          KvType kv) {
  const uint64_t d = uint64_t(hp.n_embd), dkv = uint64_t(hp.n_embd_kv()), ff = uint64_t(hp.n_ff);
  const uint64_t ctx = uint64_t(std::max<int64_t>(n_ctx, 1));
  const uint64_t batch = std::min(uint64_t(std::max<int64_t>(n_batch, 1)), ctx);  // Session's
  MemoryEstimate m;
  m.process = kProcessBytes;
  m.weights = weights;
  m.tokenizer = tokenizer_bytes(hp);
  m.kv_cache = 2 * uint64_t(hp.n_layer) * ctx * dkv * (kv == KvType::F16 ? 2 : kFloatBytes);
  // The arena (x, h, q, k, v, attn, proj, gate, up, act), the int8 activations, one token's
  // logits and the attention scores.
  m.activations = batch * (6 * d + 2 * dkv + 3 * ff) * kFloatBytes +
                  batch * uint64_t(widest_input(hp)) + uint64_t(hp.n_vocab) * kFloatBytes +
                  ctx * kFloatBytes;
  return m;
}

MemoryEstimate finetune_memory(const HParams& hp, uint64_t weights, int64_t ctx, int64_t rank,
                               const std::string& targets, bool checkpointing, float dropout,
                               int threads) {
  const uint64_t d = uint64_t(hp.n_embd), dkv = uint64_t(hp.n_embd_kv()), ff = uint64_t(hp.n_ff);
  const uint64_t T = uint64_t(std::max<int64_t>(ctx, 1));
  const uint64_t layers = uint64_t(hp.n_layer);
  const bool sub = hp.sub_norms();
  MemoryEstimate m;
  m.process = kProcessBytes;
  m.weights = weights;
  m.tokenizer = tokenizer_bytes(hp);
  const uint64_t params = lora_parameters(hp, rank, targets);
  m.adapter = params * 4 * kFloatBytes;  // values, gradients, two AdamW moments
  // What a block saves for its backward pass (model/forward.cpp, TrainActs): one set with
  // checkpointing, one per block without; each branch's A x (and its dropped-out input).
  const uint64_t saved_cols = 7 * d + 2 * dkv + 3 * ff + 2 + (sub ? d + ff + 2 : 0);
  uint64_t branch_cols = 0;
  for (const std::string& s : lora_target_suffixes(targets)) {
    if (s == "output") continue;
    branch_cols += uint64_t(rank) + (dropout > 0 ? uint64_t(block_linear_shape(hp, s).first) : 0);
  }
  const uint64_t sets = checkpointing ? 1 : layers;
  const uint64_t grad_cols = 5 * d + 2 * dkv + 3 * ff + (sub ? d + ff : 0);
  m.activations = sets * T * (saved_cols + branch_cols) * kFloatBytes  // saved
                  + layers * T * d * kFloatBytes                       // each block's input
                  + T * (4 * d + 1) * kFloatBytes                      // x, hf, rstdf, dhf, dx
                  + T * grad_cols * kFloatBytes                        // the block's gradients
                  + T * uint64_t(widest_input(hp))                     // int8 activations
                  + uint64_t(kHeadChunk) * uint64_t(hp.n_vocab) * kFloatBytes;  // a chunk's logits
  // Each thread's own: the transposed product's scratch (backend/cpu/ternary_transposed.cpp:
  // (64 + 256) x 256 + 256 + 64 x 256 floats, kept); and over all threads, the head backward's
  // parts of dh and decoded panels of 64 rows, each thread's on its columns (backend/cpu/loss.cpp).
  m.activations += uint64_t(std::max(threads, 1)) * 98560 * kFloatBytes +
                   (uint64_t(kHeadChunk) + 64) * d * kFloatBytes;
  return m;
}

}  // namespace trit::engine
