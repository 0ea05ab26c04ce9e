// The Vulkan backend's LM head: logits to the host, or the training loss (the logits of a
// chunk of tokens, the head's LoRA branches, the cross-entropy with its gradient written over
// the logits, dh) and take_loss.
//
// Each chunk's logits live in scratch one row segment at a time (rows of n_vocab floats within
// the binding limit). The per-token losses go to host-visible memory; flush() adds them up in
// double, chunk by chunk in token order, as the CPU's cross_entropy_forward does.
#include <algorithm>
#include <cstring>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kLossWg = 256;  // cross_entropy

}  // namespace

void VulkanBackend::head(const HeadOp& op) {
  const VkTensor& h = vk_tensor(*op.h);
  const FloatMatrix& w = *op.w;
  if (op.row0 < 0 || op.n < 0 || op.row0 + op.n > h.rows()) {
    fail("head: rows ", op.row0, "..", op.row0 + op.n, " of tensor '", h.name(), "' with ",
         h.rows(), " rows");
  }
  if (w.n_in != h.cols()) {
    fail("head: weight ", w.n_in, " -> ", w.n_out, " on tensor '", h.name(), "' of ", h.cols(),
         " columns");
  }
  if (op.n == 0) return;
  if (op.logits_stride != 0 && op.logits_stride != w.n_out) {
    fail("vulkan: head: logits rows ", op.logits_stride, " apart for ", w.n_out,
         " outputs (a device reads the head whole)");
  }
  if (op.logits) return head_logits(op);
  if (!op.targets) fail("head: neither logits nor targets");
  head_loss(op);
}

// logits (n, V) = h W^T + the branches, to the host.
void VulkanBackend::head_logits(const HeadOp& op) {
  const VkTensor& x = vk_tensor(*op.h);
  const FloatMatrix& w = *op.w;
  const int64_t row0 = op.row0, n = op.n;
  float* logits = op.logits;
  const FloatRows hw = weights_.float_matrix(w, "output");
  const uint64_t row_bytes = uint64_t(w.n_out) * 4;
  const uint64_t fit = ctx_->binding_limit() / row_bytes;
  if (fit == 0) {
    fail("head: one row of ", w.n_out, " logits is more than the binding limit of ",
         ctx_->binding_limit(), " bytes");
  }
  // Logits go straight to host-visible blocks, one per segment, each starting a binding.
  std::vector<std::pair<uint64_t, BufferRange>> blocks;
  scratch_.act.reset();
  for (const auto& [a, b] : row_segments({{&x.tiles(), uint64_t(row0)}}, uint64_t(n),
                                         std::min(fit, rec_.max_seg_rows()))) {
    const uint64_t rows = b - a;
    const BufferRange xr = rows_range(x.tiles(), uint64_t(row0) + a, uint64_t(row0) + b);
    const BufferRange out = scratch_.host.alloc(rows * row_bytes);
    matmul_float(kit_, hw, xr, out, rows, uint64_t(n), uint64_t(w.n_out), 1.0f, 0.0f);
    for (const LoraBranch& br : op.lora) {
      lora_apply_rows(kit_, br, xr, out, rows, uint64_t(n), uint64_t(w.n_out));
    }
    blocks.emplace_back(a, out);
  }
  flush(/*keep_host=*/true);
  for (const auto& [a, out] : blocks) {
    std::memcpy(logits + a * uint64_t(w.n_out),
                static_cast<const unsigned char*>(out.buffer->mapped()) + out.offset, out.size);
  }
  scratch_.host.reset();
}

// The loss in chunks of up to op.chunk counted tokens (HeadOp), and its gradient when op.dh is
// given.
void VulkanBackend::head_loss(const HeadOp& hop) {
  const char* op = "head";
  const VkTensor& h = vk_tensor(*hop.h);
  const FloatMatrix& w = *hop.w;
  const std::span<const LoraBranch> lora = hop.lora;
  const int32_t* targets = hop.targets;
  const float* mask = hop.mask;
  const float norm = hop.norm;
  const int64_t n = hop.n, base = hop.row0;
  int64_t chunk = hop.chunk;
  VkTensor* dh = hop.dh ? &vk_tensor(*hop.dh) : nullptr;
  if (dh && (base + n > dh->rows() || dh->cols() != w.n_in)) {
    fail(op, ": dh '", dh->name(), "' (", dh->rows(), " x ", dh->cols(), ") for ", n, " rows of ",
         w.n_in);
  }
  for (const LoraBranch& br : lora) check_lora_branch(br, w.n_in, w.n_out, op, dh != nullptr);
  const int64_t vocab = w.n_out;
  for (int64_t t = 0; t < n; ++t) {
    if ((!mask || mask[t] != 0.0f) && (targets[t] < 0 || targets[t] >= vocab)) {
      fail(op, ": token ", t, " has target ", targets[t], ", outside the vocabulary of ", vocab,
           " tokens");
    }
  }
  if (n == 0) return;
  const FloatRows hw = weights_.float_matrix(w, "output");
  const uint64_t row_bytes = uint64_t(vocab) * 4;
  const uint64_t fit = ctx_->binding_limit() / row_bytes;
  if (fit == 0) {
    fail(op, ": one row of ", vocab, " logits is more than the binding limit of ",
         ctx_->binding_limit(), " bytes");
  }
  const Pipeline& ce =
      rec_.pipeline("cross_entropy", 4, sizeof(CrossEntropyPush), {kLossWg}, 0b0110);
  const float inv_norm = 1.0f / std::max(norm, 1.0f);
  chunk = std::max<int64_t>(1, chunk);
  // Chunks of counted tokens alone (a masked token's logits are never used: prompts under
  // --mask-prompt, each sequence's last token): each run of consecutive counted rows, up to
  // `chunk` of them at a time.
  for (int64_t t0 = 0, cn = 0; t0 < n; t0 += cn) {
    if (mask && mask[t0] == 0.0f) {
      cn = 1;
      continue;
    }
    cn = 1;
    while (cn < chunk && t0 + cn < n && (!mask || mask[t0 + cn] != 0.0f)) ++cn;
    PendingLoss pending;
    pending.inv_norm = 1.0 / std::max(double(norm), 1.0);
    pending.mask.assign(size_t(cn), 1.0f);
    if (mask) std::copy(mask + t0, mask + t0 + cn, pending.mask.begin());
    std::vector<RowsOf> touched = {{&h.tiles(), uint64_t(base + t0)}};
    if (dh) touched.push_back({&dh->tiles(), uint64_t(base + t0)});
    for (const auto& [a, b] :
         row_segments(touched, uint64_t(cn), std::min(fit, rec_.max_seg_rows()))) {
      scratch_.act.reset();  // reuse is ordered by the Sequence's barriers
      const uint64_t rows = b - a, t_a = uint64_t(t0) + a;       // op rows [t_a, t_a + rows)
      const uint64_t r0 = uint64_t(base) + t_a, r1 = r0 + rows;  // rows of h and dh
      const BufferRange hr = scratch_.bind_rows(rec_, h.tiles(), r0, r1, true);
      // logits (rows, vocab) = h W^T + the branches
      const BufferRange logits = scratch_.act.alloc(rows * row_bytes);
      matmul_float(kit_, hw, hr, logits, rows, uint64_t(cn), uint64_t(vocab), 1.0f, 0.0f);
      std::vector<BufferRange> ax;  // (rows, rank) per branch
      for (const LoraBranch& br : lora) {
        ax.push_back(scratch_.act.alloc(rows * uint64_t(br.a->rows()) * 4));
        lora_forward_rows(kit_, br, hr, ax.back(), logits, rows, uint64_t(vocab));
      }
      // targets and mask in, per-token losses out (host-visible, kept until the flush)
      const BufferRange tg = scratch_.host.alloc(rows * 4);
      const BufferRange mk = scratch_.host.alloc(rows * 4);
      const BufferRange nll = scratch_.host.alloc(rows * 4);
      auto* tgp = static_cast<unsigned char*>(tg.buffer->mapped()) + tg.offset;
      auto* mkp = static_cast<unsigned char*>(mk.buffer->mapped()) + mk.offset;
      std::memcpy(tgp, targets + t_a, rows * 4);
      std::memcpy(mkp, pending.mask.data() + a, rows * 4);
      const CrossEntropyPush push{uint32_t(rows), uint32_t(vocab), inv_norm, dh ? 1u : 0u};
      rec_.seq().dispatch(ce, {logits, tg, mk, nll}, push, uint32_t(rows));
      pending.nll.push_back(nll);
      if (!dh) continue;
      // dh += dlogits W + the branches' dx (their da, db too; no dropout)
      const BufferRange dhr = scratch_.bind_rows(rec_, dh->tiles(), r0, r1, true);
      transposed_product(kit_, nullptr, &hw, logits, uint64_t(vocab), dhr, rows, uint64_t(w.n_in),
                         1.0f);
      for (size_t j = 0; j < lora.size(); ++j) {
        lora_backward_rows(kit_, lora[j], dhr, logits, hr, ax[j], rows, uint64_t(vocab), 0.0f);
      }
      scratch_.unbind_rows(rec_, dhr, dh->tiles(), r0, r1);
    }
    pending_loss_.push_back(std::move(pending));
  }
}

void VulkanBackend::collect_losses() {
  for (const PendingLoss& p : pending_loss_) {
    double sum = 0;
    size_t t = 0;
    for (const BufferRange& r : p.nll) {
      const auto* v = reinterpret_cast<const float*>(
          static_cast<const unsigned char*>(r.buffer->mapped()) + r.offset);
      for (uint64_t i = 0; i < r.size / 4; ++i, ++t) {
        if (p.mask[t] != 0.0f) sum += double(p.mask[t]) * double(v[i]);
      }
    }
    loss_ += sum * p.inv_norm;
  }
  pending_loss_.clear();
}

double VulkanBackend::take_loss() {
  flush();
  const double loss = loss_;
  loss_ = 0;
  return loss;
}

}  // namespace trit::engine::vk
