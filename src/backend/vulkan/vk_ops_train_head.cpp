// The Vulkan backend's training loss: head_loss (logits of a chunk of tokens, the LoRA
// branches of the head, cross-entropy with its gradient written over the logits, dh) and
// take_loss.
//
// Each chunk's logits live in scratch one row segment at a time (rows of n_vocab floats within
// the binding limit). The per-token losses go to host-visible memory; flush() adds them up in
// double, chunk by chunk in token order, as the CPU's cross_entropy_forward does.
#include <algorithm>
#include <cstring>

#include "backend/vulkan/vk_backend_impl.h"
#include "model/model.h"

namespace trit::vk {
namespace {

constexpr uint32_t kLossWg = 256;  // cross_entropy

}  // namespace

void VulkanBackend::head_loss(const DeviceTensor& h_t, int64_t n, const FloatMatrix& w,
                              std::span<const LoraBranch> lora, const int32_t* targets,
                              const float* mask, float norm, int64_t chunk, DeviceTensor* dh_t) {
  const char* op = "head_loss";
  const VkTensor& h = vk_tensor(h_t);
  VkTensor* dh = dh_t ? &vk_tensor(*dh_t) : nullptr;
  if (n < 0 || n > h.rows() || h.cols() != w.n_in) {
    fail(op, ": ", n, " rows of tensor '", h.name(), "' (", h.rows(), " x ", h.cols(),
         ") through a head of ", w.n_in, " -> ", w.n_out);
  }
  if (dh && (n > dh->rows() || dh->cols() != w.n_in)) {
    fail(op, ": dh '", dh->name(), "' (", dh->rows(), " x ", dh->cols(), ") for ", n, " rows of ",
         w.n_in);
  }
  for (const LoraBranch& br : lora) check_lora_branch(br, w.n_in, w.n_out, op);
  const int64_t vocab = w.n_out;
  for (int64_t t = 0; t < n; ++t) {
    if ((!mask || mask[t] != 0.0f) && (targets[t] < 0 || targets[t] >= vocab)) {
      fail(op, ": token ", t, " has target ", targets[t], ", outside the vocabulary of ", vocab,
           " tokens");
    }
  }
  if (n == 0) return;
  const FloatWeight& hw = float_weight(w, "output");
  const uint64_t row_bytes = uint64_t(vocab) * 4;
  const uint64_t fit = ctx_->binding_limit() / row_bytes;
  if (fit == 0) {
    fail(op, ": one row of ", vocab, " logits is more than the binding limit of ",
         ctx_->binding_limit(), " bytes");
  }
  const Pipeline& ce = pipeline("cross_entropy", 4, sizeof(CrossEntropyPush), {kLossWg}, 0b0110);
  const float inv_norm = 1.0f / std::max(norm, 1.0f);
  chunk = std::max<int64_t>(1, chunk);
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t cn = std::min(chunk, n - t0);
    bool any = false;
    for (int64_t t = t0; t < t0 + cn; ++t) any |= !mask || mask[t] != 0.0f;
    if (!any) continue;
    PendingLoss pending;
    pending.inv_norm = 1.0 / std::max(double(norm), 1.0);
    pending.mask.assign(size_t(cn), 1.0f);
    if (mask) std::copy(mask + t0, mask + t0 + cn, pending.mask.begin());
    std::vector<RowsOf> touched = {{&h.tiles(), uint64_t(t0)}};
    if (dh) touched.push_back({&dh->tiles(), uint64_t(t0)});
    for (const auto& [a, b] : row_segments(touched, uint64_t(cn), std::min(fit, max_seg_rows_))) {
      act_scratch_.reset();  // reuse is ordered by the Sequence's barriers
      const uint64_t rows = b - a, r0 = uint64_t(t0) + a, r1 = uint64_t(t0) + b;
      const BufferRange hr = bind_rows(h.tiles(), r0, r1, true);
      // logits (rows, vocab) = h W^T + the branches
      const BufferRange logits = act_scratch_.alloc(rows * row_bytes);
      matmul_float(hw, hr, logits, rows, uint64_t(cn), uint64_t(vocab), 1.0f, 0.0f);
      std::vector<BufferRange> ax;  // (rows, rank) per branch
      for (const LoraBranch& br : lora) {
        ax.push_back(act_scratch_.alloc(rows * uint64_t(br.a->rows()) * 4));
        lora_forward_rows(br, hr, ax.back(), logits, rows, uint64_t(vocab));
      }
      // targets and mask in, per-token losses out (host-visible, kept until the flush)
      const BufferRange tg = host_.alloc(rows * 4);
      const BufferRange mk = host_.alloc(rows * 4);
      const BufferRange nll = host_.alloc(rows * 4);
      auto* tgp = static_cast<unsigned char*>(tg.buffer->mapped()) + tg.offset;
      auto* mkp = static_cast<unsigned char*>(mk.buffer->mapped()) + mk.offset;
      std::memcpy(tgp, targets + r0, rows * 4);
      std::memcpy(mkp, pending.mask.data() + a, rows * 4);
      const CrossEntropyPush push{uint32_t(rows), uint32_t(vocab), inv_norm, dh ? 1u : 0u};
      rec().dispatch(ce, {logits, tg, mk, nll}, push, uint32_t(rows));
      pending.nll.push_back(nll);
      if (!dh) continue;
      // dh += dlogits W + the branches' dx (their da, db too; no dropout)
      const BufferRange dhr = bind_rows(dh->tiles(), r0, r1, true);
      transposed_product(nullptr, &hw, logits, uint64_t(vocab), dhr, rows, uint64_t(w.n_in), 1.0f);
      for (size_t j = 0; j < lora.size(); ++j) {
        lora_backward_rows(lora[j], dhr, logits, hr, ax[j], rows, uint64_t(vocab), 0.0f);
      }
      unbind_rows(dhr, dh->tiles(), r0, r1);
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

}  // namespace trit::vk
