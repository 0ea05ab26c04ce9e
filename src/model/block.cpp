#include "model/block.h"

namespace trit::engine {

void block_forward(Backend& be, const BlockPass& p, DeviceTensor& x, int64_t T,
                   std::span<const KvView> seqs, BlockActs& a) {
  const HParams& hp = p.hp;
  const BlockWeights& w = p.w;
  const AttnShape shape = hp.attn_shape();
  const float eps = hp.rms_eps;
  auto op = [&](LinearIndex i, const LinearWeight& lw, DeviceTensor* y) {
    return LinearOp{&lw, y, p.lora[i], a.lora[i]};
  };
  // attention
  const LinearOp qkv[] = {op(kQ, w.q, a.q), op(kK, w.k, a.k), op(kV, w.v, a.v)};
  be.norm_linear({&x, w.attn_norm, eps, a.h1, a.rstd1}, qkv, T, p.mode, LinearEpilogue::none());
  // One call per run of sequences whose caches are the same tensors (a pool's slots).
  std::vector<SeqRows> run;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const KvView& kv = seqs[i];
    run.push_back({kv.row0, kv.n, kv.pos0, kv.base});
    if (i + 1 < seqs.size() && seqs[i + 1].k == kv.k && seqs[i + 1].v == kv.v) continue;
    be.rope_store_kv(*a.q, *a.k, *a.v, *kv.k, *kv.v, run, shape);
    be.attention(*a.att, *a.q, *kv.k, *kv.v, run, shape);
    run.clear();
  }
  const LinearOp o[] = {op(kO, w.o, a.o)};
  if (w.attn_sub_norm) {
    be.norm_linear({a.att, w.attn_sub_norm, eps, a.h2, a.rstd2}, o, T, p.mode,
                   LinearEpilogue::add_to(x));
  } else {  // a llama block: the projection reads the attention's output itself
    be.linear(o, *a.att, T, p.mode);
    be.add(x, *a.o, T);
  }
  if (a.x2) be.copy(*a.x2, x, T);
  // feed-forward
  const LinearOp gate_up[] = {op(kGate, w.gate, a.gate), op(kUp, w.up, a.up)};
  be.norm_linear({&x, w.ffn_norm, eps, a.h3, a.rstd3}, gate_up, T, p.mode,
                 LinearEpilogue::gated(hp.act, *a.m));
  const LinearOp down[] = {op(kDown, w.down, a.down)};
  if (w.ffn_sub_norm) {
    be.norm_linear({a.m, w.ffn_sub_norm, eps, a.h4, a.rstd4}, down, T, p.mode,
                   LinearEpilogue::add_to(x));
  } else {
    be.linear(down, *a.m, T, p.mode);
    be.add(x, *a.down, T);
  }
}

void block_backward(Backend& be, const BlockPass& p, const DeviceTensor& x_in, BlockActs& a,
                    BlockGrads& g, DeviceTensor& dx, int64_t T, std::span<const SeqRows> seqs) {
  const HParams& hp = p.hp;
  const BlockWeights& w = p.w;
  const AttnShape shape = hp.attn_shape();
  // dx_in += d(layer i)/d(input) . dy, through the frozen weights and the LoRA branches.
  auto linear_back = [&](LinearIndex i, const LinearWeight& lw, DeviceTensor& dx_in,
                         const DeviceTensor& dy) {
    be.linear_backward(dx_in, dy, lw, T);
    for (size_t j = 0; j < p.lora[i].size(); ++j) {
      be.lora_backward(dx_in, dy, a.lora[i][j], T, p.lora[i][j], p.mode.dropout);
    }
  };
  // dx holds d(block output) on entry; the residuals pass it through to x2 and x.
  be.copy(*g.dx2, dx, T);
  be.zero(*g.dm);
  if (w.ffn_sub_norm) {
    be.zero(*g.dh4);
    linear_back(kDown, w.down, *g.dh4, dx);
    be.rms_norm_backward(*g.dm, *g.dh4, *a.m, w.ffn_sub_norm, *a.rstd4, T);
  } else {
    linear_back(kDown, w.down, *g.dm, dx);
  }
  be.zero(*g.dgate);
  be.zero(*g.dup);
  be.gated_act_backward(*g.dgate, *g.dup, *g.dm, *a.gate, *a.up, T, hp.act);
  be.zero(*g.dh3);
  linear_back(kGate, w.gate, *g.dh3, *g.dgate);
  linear_back(kUp, w.up, *g.dh3, *g.dup);
  be.rms_norm_backward(*g.dx2, *g.dh3, *a.x2, w.ffn_norm, *a.rstd3, T);
  // attention
  be.zero(*g.datt);
  if (w.attn_sub_norm) {
    be.zero(*g.dh2);
    linear_back(kO, w.o, *g.dh2, *g.dx2);
    be.rms_norm_backward(*g.datt, *g.dh2, *a.att, w.attn_sub_norm, *a.rstd2, T);
  } else {
    linear_back(kO, w.o, *g.datt, *g.dx2);
  }
  be.zero(*g.dq);
  be.zero(*g.dk);
  be.zero(*g.dv);
  be.attention_backward(*g.dq, *g.dk, *g.dv, *g.datt, *a.q, *a.k, *a.v, seqs, shape);
  for (const SeqRows& s : seqs) {
    be.rope_backward(*g.dq, s.row0, s.n, hp.n_head, shape, 0);
    be.rope_backward(*g.dk, s.row0, s.n, hp.n_head_kv, shape, 0);
  }
  be.zero(*g.dh1);
  linear_back(kQ, w.q, *g.dh1, *g.dq);
  linear_back(kK, w.k, *g.dh1, *g.dk);
  linear_back(kV, w.v, *g.dh1, *g.dv);
  be.rms_norm_backward(*g.dx2, *g.dh1, x_in, w.attn_norm, *a.rstd1, T);
  be.copy(dx, *g.dx2, T);
}

}  // namespace trit::engine
