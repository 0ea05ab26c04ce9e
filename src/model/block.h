// One transformer block of a BitNet b1.58 model, forward and backward (DESIGN sections 1 and 2),
// composed of Backend ops. Generation and training run the same block_forward: generation with
// a KV cache and nothing saved, training with the sequence as its own cache and everything the
// backward pass reads saved in BlockActs (gradient checkpointing calls block_forward again).
//
// The residual stream x is updated in place:
//   h1 = attn_norm(x);  q, k, v = h1 W_q, W_k, W_v (+ LoRA);  rope q, k;  store k, v
//   att = attention(q, k_cache, v_cache);  h2 = attn_sub_norm(att);  x += h2 W_o (+ LoRA)
//   h3 = ffn_norm(x);  m = act(h3 W_gate) * (h3 W_up) (+ LoRA before the activation)
//   h4 = ffn_sub_norm(m);  x += h4 W_down (+ LoRA)
// Each line with a norm is one norm_linear op, which a device may run as one kernel. A llama
// block has no sub-norms: W_o reads att and W_down reads m themselves (h2, h4 unused).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace trit::engine {

// The branches of each linear layer of one block (LinearIndex order); empty spans: none.
using BlockLora = std::array<std::span<const LoraBranch>, kLinearCount>;

// The tensors a block's forward pass writes. (T tokens)
//   h1, h2, h3: (T, d)  q, att, o, down: (T, d)  k, v: (T, dkv)  gate, up, m, h4: (T, ff)
// Generation may let tensors of different steps share memory (h1, h2 and h3 one tensor, h4
// the gate's). Training saves for the backward pass, when the pointers below are not null: the
// norms' rstd (T, 1), the residual after attention x2 (T, d), and per LoRA branch what it saves.
struct BlockActs {
  DeviceTensor *h1 = nullptr, *q = nullptr, *k = nullptr, *v = nullptr;
  DeviceTensor *att = nullptr, *h2 = nullptr, *o = nullptr;
  DeviceTensor *h3 = nullptr, *gate = nullptr, *up = nullptr, *m = nullptr;
  DeviceTensor *h4 = nullptr, *down = nullptr;
  DeviceTensor *rstd1 = nullptr, *rstd2 = nullptr, *rstd3 = nullptr, *rstd4 = nullptr;
  DeviceTensor* x2 = nullptr;
  std::array<std::vector<LoraSaved>, kLinearCount> lora;  // one per branch, or empty
};

// One sequence's tokens in a pass: rows [row0, row0 + n) of the block's tensors, at positions
// pos0 .. pos0 + n - 1, whose keys and values go to and are read from rows [base, base + pos0 +
// n) of k and v. Generation: the sequence's KV cache of this layer (a batch holds several
// sequences, with caches of their own or rows of one pool); training: acts.k and acts.v
// themselves with row0 = pos0 = base = 0.
struct KvView {
  DeviceTensor* k = nullptr;
  DeviceTensor* v = nullptr;
  int64_t pos0 = 0;
  int64_t row0 = 0;
  int64_t n = 0;
  int64_t base = 0;
};

// Everything a block's pass needs besides its tensors.
struct BlockPass {
  const HParams& hp;
  const BlockWeights& w;
  BlockLora lora;
  LinearMode mode;  // activation quantisation, LoRA dropout and its key for this layer
};

// x (T, d): the block's input on entry, its output on return. seqs cover rows [0, T), one
// entry per sequence; the linear layers run over all T rows at once.
void block_forward(Backend& be, const BlockPass& p, DeviceTensor& x, int64_t T,
                   std::span<const KvView> seqs, BlockActs& a);

// Scratch for the backward pass of one block. (T tokens)
struct BlockGrads {
  DeviceTensor *dx2 = nullptr, *dh1 = nullptr, *dh2 = nullptr, *dh3 = nullptr;   // (T, d)
  DeviceTensor *datt = nullptr, *dq = nullptr;                                   // (T, d)
  DeviceTensor *dk = nullptr, *dv = nullptr;                                     // (T, dkv)
  DeviceTensor *dh4 = nullptr, *dm = nullptr, *dgate = nullptr, *dup = nullptr;  // (T, ff)
};

// Backward pass of block_forward over whole sequences of training packed in rows [0, T), each
// from position 0 and its own keys (seqs: row0 = base, pos0 = 0): x_in is the block's input and
// `a` what its forward pass saved; dx (T, d) holds d(output) on entry and d(input) on return.
// The branches' da and db get their gradients added.
void block_backward(Backend& be, const BlockPass& p, const DeviceTensor& x_in, BlockActs& a,
                    BlockGrads& g, DeviceTensor& dx, int64_t T, std::span<const SeqRows> seqs);

}  // namespace trit::engine
