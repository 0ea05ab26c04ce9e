// The LM head with the cross-entropy loss: the reference loss (ops.h) and the CPU backend's
// head op (logits to the host, or the loss with its gradient).
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/exp_lanes.h"
#include "backend/cpu/kernels_backward.h"
#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

using Vec = std::vector<float>;

namespace {

void check_target(const char* op, const int32_t* targets, int64_t t, int64_t n_vocab) {
  if (targets[t] < 0 || targets[t] >= n_vocab) {
    fail(op, ": token ", t, " has target ", targets[t], ", outside the vocabulary of ", n_vocab,
         " tokens");
  }
}

float row_log_sum_exp(const float* x, int64_t n) {
  const float m = max_of(x, n);
  // The exponentials a chunk at a time, then summed in four interleaved double sums (element i
  // into sum i % 4, each in order; then (s0 + s1) + (s2 + s3)): one chain of dependent adds
  // took 3 ns an element, four exps' worth.
  double s[4] = {0, 0, 0, 0};
  constexpr int64_t kChunk = 1024;  // a multiple of 4: element i's sum is i % 4 in every chunk
  float e[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t c = std::min(kChunk, n - i0);
    std::copy(x + i0, x + i0 + c, e);
    exp_shifted(e, c, m);
    for (int64_t i = 0; i < c; ++i) s[i % 4] += double(e[i]);
  }
  return float(double(m) + std::log((s[0] + s[1]) + (s[2] + s[3])));
}

}  // namespace

double cross_entropy_forward(const float* logits, const int32_t* targets, const float* mask,
                             int64_t n_tokens, int64_t n_vocab, float norm, float* nll,
                             float* lse) {
  const double inv_norm = 1.0 / std::max(double(norm), 1.0);
  double loss = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float m = mask ? mask[t] : 1.0f;
    if (m == 0.0f) {
      if (nll) nll[t] = 0.0f;
      if (lse) lse[t] = 0.0f;
      continue;
    }
    check_target("cross_entropy_forward", targets, t, n_vocab);
    const float* row = logits + t * n_vocab;  // (n_vocab)
    const float l = row_log_sum_exp(row, n_vocab);
    const float token_nll = l - row[targets[t]];
    if (nll) nll[t] = token_nll;
    if (lse) lse[t] = l;
    loss += double(m) * double(token_nll);
  }
  return loss * inv_norm;
}

void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* mask, const float* lse, int64_t n_tokens, int64_t n_vocab,
                            float norm) {
  const float inv_norm = 1.0f / std::max(norm, 1.0f);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = logits + t * n_vocab;  // (n_vocab)
    float* drow = dlogits + t * n_vocab;      // (n_vocab)
    const float m = mask ? mask[t] : 1.0f;
    if (m == 0.0f) {
      std::fill(drow, drow + n_vocab, 0.0f);
      continue;
    }
    check_target("cross_entropy_backward", targets, t, n_vocab);
    const float l = lse ? lse[t] : row_log_sum_exp(row, n_vocab);
    const float w = m * inv_norm;
    const int64_t target = targets[t];
    if (drow != row) std::copy(row, row + n_vocab, drow);  // (or in place)
    exp_shifted(drow, n_vocab, l);                         // p
    for (int64_t i = 0; i < n_vocab; ++i) drow[i] = w * (i == target ? drow[i] - 1.0f : drow[i]);
  }
}

void CpuBackend::head(const HeadOp& op) {
  const DeviceTensor& hf = *op.h;
  const FloatMatrix& w = *op.w;
  check_rows(hf, op.row0, op.n, "head");
  if (w.n_in != hf.cols()) {
    fail("head: weight ", w.n_in, " -> ", w.n_out, " on tensor '", hf.name(), "' of ", hf.cols(),
         " columns");
  }
  if (op.n == 0) return;
  if (op.logits) return head_logits(op, op.logits);
  if (!op.targets) fail("head: neither logits nor targets");
  head_loss(op);
}

// logits (n, V) = h W^T + the branches.
void CpuBackend::head_logits(const HeadOp& op, float* logits) {
  const FloatMatrix& w = *op.w;
  const int64_t d = op.h->cols(), n = op.n;
  const float* h = cpu_data(*op.h) + op.row0 * d;
  const int64_t stride = op.logits_stride > 0 ? op.logits_stride : w.n_out;
  if (stride < w.n_out || (stride != w.n_out && !op.lora.empty())) {
    fail("head: logits rows ", stride, " apart for ", w.n_out, " outputs",
         op.lora.empty() ? "" : " with LoRA branches");
  }
  pool_.parallel_for(
      w.n_out, [&](int64_t r0, int64_t r1, int) { float_matmul(w, h, n, logits, stride, r0, r1); },
      64);
  for (const LoraBranch& br : op.lora) {
    const int64_t r = br.a->rows();
    lora_ax_.resize(size_t(n * r));
    pool_.parallel_for(n, [&](int64_t t0, int64_t t1, int) {
      matmul_f32_forward(h, cpu_data(*br.a), d, r, lora_ax_.data(), t0, t1);
    });
    lora_b_forward(cpu_data(*br.b), lora_ax_.data(), n, r, w.n_out, br.scale, logits, pool_);
  }
}

// The loss in chunks of op.chunk counted tokens (HeadOp), and its gradient when op.dh is given.
void CpuBackend::head_loss(const HeadOp& op) {
  const DeviceTensor& hf = *op.h;
  const FloatMatrix& w = *op.w;
  const std::span<const LoraBranch> lora = op.lora;
  const int32_t* targets = op.targets;
  const float* mask = op.mask;
  const float norm = op.norm;
  DeviceTensor* dhf = op.dh;
  const int64_t T = op.n;
  const int64_t d = hf.cols(), V = w.n_out;
  const int64_t chunk = std::max<int64_t>(1, op.chunk);
  if (dhf) check_rows(*dhf, op.row0, op.n, "head");
  Vec nll, lse;
  Vec& logits = head_logits_;
  // Only the counted tokens (mask not 0) go through the head, op.chunk of them at a time: a
  // masked token's logits, loss and gradient are never used (prompts under --mask-prompt, a
  // sequence's last token). Where a chunk's tokens are not consecutive rows they are gathered,
  // and their dh put back after. Rows are independent, so each counted row gets the values it
  // gets among all rows.
  std::vector<int64_t> kept;
  for (int64_t t = 0; t < T; ++t) {
    if (!mask || mask[t] != 0.0f) kept.push_back(t);
  }
  Vec h_kept, dh_kept, m_kept;
  std::vector<int32_t> targets_kept;
  for (int64_t i0 = 0; i0 < int64_t(kept.size()); i0 += chunk) {
    const int64_t n = std::min(chunk, int64_t(kept.size()) - i0);
    const int64_t* rows = kept.data() + i0;
    const bool gathered = rows[n - 1] - rows[0] != n - 1;
    const float* h = cpu_data(hf) + (op.row0 + rows[0]) * d;
    const int32_t* tg = targets + rows[0];
    const float* m = mask ? mask + rows[0] : nullptr;
    float* dh = dhf ? cpu_data(*dhf) + (op.row0 + rows[0]) * d : nullptr;
    if (gathered) {
      const float* h_all = cpu_data(hf) + op.row0 * d;
      const float* dh_all = dhf ? cpu_data(*dhf) + op.row0 * d : nullptr;
      h_kept.resize(size_t(n * d));
      targets_kept.resize(size_t(n));
      m_kept.resize(size_t(n));
      if (dh_all) dh_kept.resize(size_t(n * d));
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = rows[i];
        std::copy(h_all + t * d, h_all + (t + 1) * d, h_kept.begin() + i * d);
        targets_kept[size_t(i)] = targets[t];
        m_kept[size_t(i)] = mask[t];
        if (dh_all) std::copy(dh_all + t * d, dh_all + (t + 1) * d, dh_kept.begin() + i * d);
      }
      h = h_kept.data();
      tg = targets_kept.data();
      m = m_kept.data();
      dh = dh_all ? dh_kept.data() : nullptr;
    }
    if (logits.size() < size_t(n * V)) logits.resize(size_t(n * V));
    pool_.parallel_for(  // writes every one of the n x V logits
        V, [&](int64_t r0, int64_t r1, int) { float_matmul(w, h, n, logits.data(), V, r0, r1); },
        64);
    std::vector<Vec> hax(lora.size());
    for (size_t j = 0; j < lora.size(); ++j) {
      const LoraBranch& br = lora[j];
      const int64_t r = br.a->rows();
      hax[j].resize(static_cast<size_t>(n * r));
      matmul_f32_forward(h, cpu_data(*br.a), d, r, hax[j].data(), 0, n);
      lora_b_forward(cpu_data(*br.b), hax[j].data(), n, r, V, br.scale, logits.data(), pool_);
    }
    // Each token's log-sum-exp on the threads, the loss summed in token order as
    // cross_entropy_forward sums it (the same bits at any thread count).
    nll.assign(size_t(n), 0.0f);
    lse.assign(size_t(n), 0.0f);  // kept for the backward: one pass of exp over V less a token
    pool_.parallel_for(n, [&](int64_t a, int64_t b, int) {
      cross_entropy_forward(logits.data() + a * V, tg + a, m ? m + a : nullptr, b - a, V, norm,
                            nll.data() + a, lse.data() + a);
    });
    double sum = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (!m || m[t] != 0.0f) sum += double(m ? m[t] : 1.0f) * double(nll[size_t(t)]);
    }
    loss_ += sum * (1.0 / std::max(double(norm), 1.0));
    if (!dhf) continue;
    pool_.parallel_for(n, [&](int64_t a, int64_t b, int) {
      cross_entropy_backward(logits.data() + a * V, logits.data() + a * V, tg + a,
                             m ? m + a : nullptr, lse.data() + a, b - a, V, norm);
    });
    // dh += dlogits W: each thread owns a range of dh's columns (whole blocks of the head's
    // type, 16 columns at least) and sums over the whole vocabulary, a panel of W's rows at a
    // time, into a buffer of its own that it then adds to dh: every element is the same sum
    // in the same order at any thread count (the bits of one thread).
    const DTypeTraits& tr = dtype_traits(w.type);
    const int64_t col_align = std::max<int64_t>(16, tr.block_elems);
    pool_.parallel_for(
        d,
        [&](int64_t c0, int64_t c1, int) {
          const int64_t width = c1 - c0;
          Vec part(static_cast<size_t>(n * width), 0.0f);
          constexpr int64_t kPanelRows = 64;
          const int64_t panel_rows = std::min(kPanelRows, V);
          Vec panel(static_cast<size_t>(panel_rows * width));
          // The next panel's bytes of these columns are asked for while this one is summed:
          // a part of each of 64 rows, which the hardware prefetchers do not see coming.
          const int64_t stride = row_bytes(w.type, w.n_in);
          const int64_t b0 = c0 / tr.block_elems * tr.block_bytes;
          const int64_t b1 = c1 / tr.block_elems * tr.block_bytes;
          for (int64_t p0 = 0; p0 < V; p0 += panel_rows) {
            const int64_t p1 = std::min(V, p0 + panel_rows);
            float_matrix_cols(w, p0, p1, c0, c1, panel.data());
            for (int64_t r = p1; r < std::min(V, p1 + panel_rows); ++r) {
              for (int64_t b = b0; b < b1; b += 64) cpu::prefetch_weights(w.data + r * stride + b);
            }
            gemm_f32_acc(0, n, width, p1 - p0, logits.data() + p0, V, 1, panel.data(), width,
                         part.data(), width);
          }
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t c = 0; c < width; ++c) dh[t * d + c0 + c] += part[size_t(t * width + c)];
          }
        },
        col_align);
    for (size_t j = 0; j < lora.size(); ++j) {
      const LoraBranch& br = lora[j];
      lora_backward_host(dh, logits.data(), h, hax[j].data(), cpu_data(*br.a), cpu_data(*br.b),
                         cpu_data(*br.da), cpu_data(*br.db), n, d, V, br.a->rows(), br.scale, 0.0f,
                         pool_);
    }
    if (gathered) {  // the counted rows' dh back in place
      float* dh_all = cpu_data(*dhf) + op.row0 * d;
      for (int64_t i = 0; i < n; ++i) std::copy(dh + i * d, dh + (i + 1) * d, dh_all + rows[i] * d);
    }
  }
}

double CpuBackend::take_loss() {
  const double l = loss_;
  loss_ = 0;
  return l;
}
}  // namespace trit::engine
