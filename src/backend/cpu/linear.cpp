// The linear family: the bitlinear (ternary weights x int8 or float activations), merged float
// layers and the LoRA branches, forward and backward, on the CPU; the references of ops.h that
// belong to it (the f32 products of the LoRA branches, the bitlinear with float activations,
// the dropout).
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels_backward.h"
#include "backend/cpu/lora_rows.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "core/random.h"

namespace trit::engine {

using Vec = std::vector<float>;

namespace {

// Trits of one row of a TQ1_0, TQ2_0 or I2_S matrix and the scale of each weight's block.
void decode_ternary_row(const TernaryMatrix& w, int64_t r, int8_t* trits, float* scales) {
  const int64_t n = w.n_in;
  if (w.type == DType::TQ1_0) {
    const uint8_t* row = w.data + r * row_bytes(DType::TQ1_0, n);
    uint8_t codes[kQK_K];
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      const uint8_t* blk = row + b * kTQ1BlockBytes;
      uint16_t d16;
      std::memcpy(&d16, blk + kTQ1DOffset, 2);
      const float d = fp16_to_f32(d16);
      decode_tq1_0_block(blk, codes);
      for (int64_t j = 0; j < kQK_K; ++j) {
        trits[b * kQK_K + j] = int8_t(codes[j] - 1);
        scales[b * kQK_K + j] = d;
      }
    }
  } else if (w.type == DType::TQ2_0) {
    const uint8_t* row = w.data + r * row_bytes(DType::TQ2_0, n);
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      const uint8_t* blk = row + b * 66;
      uint16_t d16;
      std::memcpy(&d16, blk + 64, 2);
      const float d = fp16_to_f32(d16);
      for (int64_t j = 0; j < kQK_K; ++j) {
        const int64_t h = j / 128, l = (j % 128) / 32, m = j % 32;
        trits[b * kQK_K + j] = int8_t(((blk[32 * h + m] >> (2 * l)) & 3) - 1);
        scales[b * kQK_K + j] = d;
      }
    }
  } else {
    const uint8_t* row = w.data + r * (n / 4);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t run = j / 128, k = j % 128;
      trits[j] = int8_t(((row[run * 32 + k % 32] >> (6 - 2 * (k / 32))) & 3) - 1);
      scales[j] = w.uniform_scale;
    }
  }
}

}  // namespace

// y (T, n_out) += s * ax B^T, each element's dot product summed in rank order. The sums run
// over B^T's rows, a block of outputs at a time: the same operations in the same order for each
// element, vectorised across outputs (a dot product of rank 16 alone waits on each addition).
void lora_b_forward(const float* b, const float* ax, int64_t T, int64_t r, int64_t n_out, float s,
                    float* y, ThreadPool& pool) {
  constexpr int64_t kBlock = 256;  // outputs whose sums and B^T rows stay in L1
  pool.parallel_for(n_out, [&](int64_t o0, int64_t o1, int) {
    // B^T's columns [o0, o1), transposed by the thread that uses them.
    const int64_t w = o1 - o0;
    Vec bt(static_cast<size_t>(r * w));
    for (int64_t o = o0; o < o1; ++o) {
      for (int64_t k = 0; k < r; ++k) bt[size_t(k * w + o - o0)] = b[o * r + k];
    }
    for (int64_t ob = o0; ob < o1; ob += kBlock) {
      lora_b_block(bt.data() + (ob - o0), w, ax, T, r, std::min(kBlock, o1 - ob), s, y + ob, n_out);
    }
  });
}

// The LoRA part of a linear layer's backward pass, on host arrays.
void lora_backward_host(float* dx, const float* dy, const float* xd, const float* ax,
                        const float* a, const float* b, float* da, float* db, int64_t T,
                        int64_t n_in, int64_t n_out, int64_t r, float s, float p,
                        ThreadPool& pool) {
  // d(branch output before the scale) = s * dy, written (and its pages first touched) by the
  // threads: on a 16-core machine the element-wise loops of this function were a fifth of a
  // training step when one thread ran them.
  const std::unique_ptr<float[]> ds(new float[size_t(T * n_out)]);
  pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
    for (int64_t i = t0 * n_out; i < t1 * n_out; ++i) ds[size_t(i)] = s * dy[i];
  });
  pool.parallel_for(n_out, [&](int64_t r0, int64_t r1, int) {
    matmul_f32_backward_dw(db, ds.get(), ax, T, r, n_out, r0, r1);
  });
  Vec dax(size_t(T * r), 0.0f);  // (T, r) = ds B
  pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
    matmul_f32_backward_dx(dax.data(), ds.get(), b, r, n_out, t0, t1);
  });
  // da (r, n_in): r rows are fewer tasks than a large machine's threads, so the columns are
  // split too (each element still sums over the tokens in order: the same bits). Rows go in
  // groups of 8, the register tile's height: one row at a time read each row of xd's column
  // block once per row of da, from a cache line of its own.
  constexpr int64_t kCols = 256, kRows = 8;
  const int64_t col_blocks = (n_in + kCols - 1) / kCols, row_groups = (r + kRows - 1) / kRows;
  pool.parallel_for(row_groups * col_blocks, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t row = i / col_blocks * kRows, c0 = i % col_blocks * kCols;
      gemm_f32_acc(row, std::min(r, row + kRows), std::min(kCols, n_in - c0), T, dax.data(), 1, r,
                   xd + c0, n_in, da + c0, n_in);
    }
  });
  // dx += (dax A) / (1 - p) through the dropout (xd = x * keep / (1 - p), 0 exactly where
  // dropped): each thread its own rows of dax A, then adds them.
  const float inv = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
  pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
    Vec dxd(size_t((t1 - t0) * n_in), 0.0f);
    matmul_f32_backward_dx(dxd.data(), dax.data() + t0 * r, a, n_in, r, 0, t1 - t0);
    for (int64_t i = 0; i < (t1 - t0) * n_in; ++i) {
      const int64_t g = t0 * n_in + i;
      if (p > 0 && xd[g] == 0.0f) continue;
      dx[g] += dxd[size_t(i)] * inv;
    }
  });
}

namespace {

void check_branch(const LoraBranch& br, int64_t n_in, int64_t n_out, const char* op) {
  if (!br.a || !br.b) fail(op, ": LoRA branch without its A or B tensor");
  const int64_t r = br.a->rows();
  if (br.a->cols() != n_in || br.b->rows() != n_out || br.b->cols() != r) {
    fail(op, ": LoRA branch '", br.a->name(), "' (", br.a->rows(), " x ", br.a->cols(), ") and '",
         br.b->name(), "' (", br.b->rows(), " x ", br.b->cols(), ") on a layer ", n_in, " -> ",
         n_out);
  }
}

}  // namespace

void ternary_matmul_float(const TernaryMatrix& w, const float* x, int64_t n_tokens, float* y,
                          int64_t r0, int64_t r1) {
  if (w.type != DType::TQ1_0 && w.type != DType::TQ2_0 && w.type != DType::I2_S) {
    // e.g. a merged model's float layer
    fail("ternary_matmul_float: weight type ", dtype_name(w.type), " is not tq1_0, tq2_0 or i2_s");
  }
  std::vector<int8_t> trits(static_cast<size_t>(w.n_in));
  std::vector<float> scales(static_cast<size_t>(w.n_in));
  for (int64_t r = r0; r < r1; ++r) {
    decode_ternary_row(w, r, trits.data(), scales.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.n_in;
      float acc = 0;
      for (int64_t j = 0; j < w.n_in; ++j)
        acc += float(trits[size_t(j)]) * scales[size_t(j)] * xt[j];
      y[t * w.n_out + r] = acc;
    }
  }
}

void lora_dropout(const float* x, int64_t n, float p, uint64_t key, uint64_t salt, float* xd) {
  const float inv = 1.0f / (1.0f - p);
  const uint64_t base = splitmix64(key ^ splitmix64(salt));
  for (int64_t i = 0; i < n; ++i) {
    const double u = double(splitmix64(base + uint64_t(i)) >> 11) * 0x1.0p-53;
    xd[i] = u < p ? 0.0f : x[i] * inv;
  }
}

void matmul_f32_forward(const float* x, const float* w, int64_t n_in, int64_t n_out, float* y,
                        int64_t t0, int64_t t1) {
  if (t1 <= t0) return;
  thread_local std::vector<float> wt;  // (n_in, n_out) W^T, so that the product is C += A B
  wt.resize(size_t(n_in * n_out));
  for (int64_t o = 0; o < n_out; ++o) {
    for (int64_t k = 0; k < n_in; ++k) wt[size_t(k * n_out + o)] = w[o * n_in + k];
  }
  std::fill(y + t0 * n_out, y + t1 * n_out, 0.0f);
  gemm_f32_acc(t0, t1, n_out, n_in, x, n_in, 1, wt.data(), n_out, y, n_out);
}

void matmul_f32_backward_dx(float* dx, const float* dy, const float* w, int64_t n_in, int64_t n_out,
                            int64_t t0, int64_t t1) {
  // dx (T, n_in) += dy (T, n_out) W (n_out, n_in)
  gemm_f32_acc(t0, t1, n_in, n_out, dy, n_out, 1, w, n_in, dx, n_in);
}

void matmul_f32_backward_dw(float* dw, const float* dy, const float* x, int64_t n_tokens,
                            int64_t n_in, int64_t n_out, int64_t r0, int64_t r1) {
  // dW (n_out, n_in) += dy^T (n_out, T) x (T, n_in)
  gemm_f32_acc(r0, r1, n_in, n_tokens, dy, 1, n_out, x, n_in, dw, n_in);
}

void matmul_f32_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                         int64_t n_tokens, int64_t n_in, int64_t n_out) {
  if (dx) matmul_f32_backward_dx(dx, dy, w, n_in, n_out, 0, n_tokens);
  if (dw) matmul_f32_backward_dw(dw, dy, x, n_tokens, n_in, n_out, 0, n_out);
}

// Several layers sharing one input: the rows of all of them are split across the threads in
// one dispatch.
namespace {

// x (T, n) as rows of `width` values, the tail of each zero.
const float* pad_rows(const float* x, int64_t T, int64_t n, int64_t width,
                      std::vector<float>& buf) {
  buf.assign(size_t(T * width), 0.0f);
  for (int64_t t = 0; t < T; ++t) std::copy(x + t * n, x + (t + 1) * n, buf.data() + t * width);
  return buf.data();
}

}  // namespace

void CpuBackend::linear(std::span<const LinearOp> ops, const DeviceTensor& xt, int64_t T,
                        const LinearMode& mode) {
  const bool act_quant = mode.act_quant;
  const float* x = cpu_data(xt);
  const int64_t n_in = xt.cols();
  int64_t total = 0;
  bool any_ternary = false;
  int64_t width = n_in;  // of the ternary rows: n_in, or padded (TernaryMatrix::row_in)
  for (const LinearOp& j : ops) {
    total += j.w->m.n_out;
    if (j.w->is_float()) continue;
    if (any_ternary && j.w->m.stored_in() != width) {
      fail("linear ", j.w->name, ": rows stored ", j.w->m.stored_in(), " wide beside rows ", width,
           " wide on one input");
    }
    any_ternary = true;
    width = j.w->m.stored_in();
  }
  // Padded rows read the input padded with zeros: the same sums, the same absmax.
  const float* xw = width == n_in ? x : pad_rows(x, T, n_in, width, x_padded_);
  if (act_quant && any_ternary) {  // rows on their own: split over the threads
    size_quantized_acts(xq_, T, width);
    pool_.parallel_for(T,
                       [&](int64_t t0, int64_t t1, int) { quantize_acts_rows(xw, t0, t1, xq_); });
  }
  const auto rows_of = [&](int64_t begin, int64_t end, int) {
    int64_t base = 0;
    for (const LinearOp& j : ops) {
      const int64_t rows = j.w->m.n_out;
      const int64_t r0 = std::max(begin - base, int64_t(0));
      const int64_t r1 = std::min(end - base, rows);
      if (r0 < r1) {
        float* y = cpu_data(*j.y);
        if (j.w->is_float()) {  // a merged layer: float weights, un-quantised input
          float_matmul(j.w->f, x, T, y, rows, r0, r1);
        } else if (act_quant) {
          ternary_matmul(j.w->m.storage(), xq_, y, rows, r0, r1);
        } else {
          ternary_matmul_float(j.w->m.storage(), xw, T, y, r0, r1);
        }
        // The layer's scale tensor (llama.cpp's BitNet files), on the rows just computed.
        if (j.w->out_scale != 1.0f) {
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t r = r0; r < r1; ++r) y[t * rows + r] *= j.w->out_scale;
          }
        }
      }
      base += rows;
    }
  };
  // Rows are computed on their own. Many tokens (prompts, training): rows in chunks of about
  // a quarter of a thread's share, taken as threads come free. A few tokens (decoding) stream
  // each weight once: one range a thread, whose prefetches run ahead without a break.
  const int64_t threads = pool_.size();
  if (T > 4 && threads > 2) {
    pool_.parallel_for_dynamic(total, rows_of,
                               std::max<int64_t>(16, (total / (4 * threads) + 15) / 16 * 16));
  } else {
    pool_.parallel_for(total, rows_of, 16);
  }
  for (const LinearOp& j : ops) {
    // The LoRA branches see the un-quantised input; `.scale` does not multiply them.
    if (!j.saved.empty() && j.saved.size() != j.lora.size()) {
      fail("linear ", j.w->name, ": ", j.saved.size(), " saves for ", j.lora.size(), " branches");
    }
    for (size_t b = 0; b < j.lora.size(); ++b) {
      lora_forward(*j.y, xt, T, j.lora[b], j.saved.empty() ? LoraSaved{} : j.saved[b], mode.dropout,
                   mode.key);
    }
  }
}

void CpuBackend::lora_forward(DeviceTensor& y, const DeviceTensor& x, int64_t T,
                              const LoraBranch& br, const LoraSaved& saved, float p, uint64_t key) {
  const int64_t n_in = x.cols(), r = br.a ? br.a->rows() : 0;
  check_branch(br, n_in, y.cols(), "lora_forward");
  if (!(p >= 0.0f && p < 1.0f)) fail("lora_forward: dropout probability ", p, " outside [0, 1)");
  // A branch of some rows of a batch (generation): the rows as a pass of their own.
  const int64_t row0 = br.row0, n_rows = br.rows < 0 ? T - br.row0 : br.rows;
  if (row0 < 0 || n_rows < 0 || row0 + n_rows > T) {
    fail("lora_forward: rows [", row0, ", ", row0 + n_rows, ") of a pass of ", T);
  }
  if (n_rows != T && (p > 0 || saved.xd || saved.ax)) {
    fail("lora_forward: a branch of some rows of a batch cannot train");
  }
  T = n_rows;
  // xd = dropout(x), or x itself.
  const float* xdp = cpu_data(x) + row0 * n_in;
  if (p > 0 || (saved.xd && saved.xd != &x)) {
    float* dst = saved.xd ? cpu_data(*saved.xd) : nullptr;
    if (!dst) {
      lora_xd_.resize(size_t(T * n_in));
      dst = lora_xd_.data();
    }
    if (p > 0) {
      lora_dropout(cpu_data(x), T * n_in, p, key, br.salt, dst);
    } else {
      std::copy(cpu_data(x), cpu_data(x) + T * n_in, dst);
    }
    xdp = dst;
  }
  float* axp = saved.ax ? cpu_data(*saved.ax) : nullptr;
  if (!axp) {
    lora_ax_.resize(size_t(T * r));
    axp = lora_ax_.data();
  }
  const float* a = cpu_data(*br.a);
  pool_.parallel_for(
      T, [&](int64_t t0, int64_t t1, int) { matmul_f32_forward(xdp, a, n_in, r, axp, t0, t1); });
  lora_b_forward(cpu_data(*br.b), axp, T, r, y.cols(), br.scale, cpu_data(y) + row0 * y.cols(),
                 pool_);
}

void CpuBackend::lora_backward(DeviceTensor& dx, const DeviceTensor& dy, const LoraSaved& saved,
                               int64_t T, const LoraBranch& br, float p) {
  check_branch(br, dx.cols(), dy.cols(), "lora_backward");
  if (!saved.xd || !saved.ax || !br.da || !br.db) {
    fail("lora_backward: branch '", br.a->name(), "' without its saved input or gradients");
  }
  lora_backward_host(cpu_data(dx), cpu_data(dy), cpu_data(*saved.xd), cpu_data(*saved.ax),
                     cpu_data(*br.a), cpu_data(*br.b), cpu_data(*br.da), cpu_data(*br.db), T,
                     dx.cols(), dy.cols(), br.a->rows(), br.scale, p, pool_);
}

void CpuBackend::linear_backward(DeviceTensor& dx, const DeviceTensor& dy, const LinearWeight& w,
                                 int64_t T) {
  if (w.is_float())
    fail("train: layer ", w.name, " has float (merged) weights; train a base model");
  const float* dyp = cpu_data(dy);
  float* dxp = cpu_data(dx);
  const TernaryMatrix m = w.m.storage();
  if (w.m.padded()) {  // into rows of the stored width, then the first n_in of each
    dx_padded_.assign(size_t(T * m.n_in), 0.0f);
    dxp = dx_padded_.data();
  }
  // Tasks of a 256-column panel and a block of tokens. A layer of few panels (125m's 768
  // inputs: 3) would leave most threads idle with panels alone; its tokens are then split too,
  // into the blocks that share the work out most evenly, at least 8 tokens each (each block
  // decodes the panel's weights again). Every dx value sums over the rows in the same order
  // whatever the split, so the result does not depend on it.
  const int64_t panels = (w.m.n_in + 255) / 256, threads = pool_.size();
  int64_t parts = 1;
  if (panels < 2 * threads && T > 8) {
    const int64_t least = (threads + panels - 1) / panels, most = std::max(least, (T + 7) / 8);
    double best = 0;
    for (int64_t p = least; p <= std::min(most, 4 * least); ++p) {
      const int64_t tasks = panels * p;
      const double use = double(tasks) / double((tasks + threads - 1) / threads * threads);
      if (use > best + 1e-9) best = use, parts = p;
    }
  }
  const int64_t block = (T + parts - 1) / parts;
  parts = (T + block - 1) / block;
  // Tasks taken one at a time as threads come free: each task's sums are its own.
  pool_.parallel_for_dynamic(
      panels * parts,
      [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t c0 = i / parts * 256, c1 = std::min(w.m.n_in, c0 + 256);
          const int64_t t0 = i % parts * block, t1 = std::min(T, t0 + block);
          ternary_matmul_transposed(m, dyp + t0 * w.m.n_out, w.m.n_out, t1 - t0, w.out_scale,
                                    dxp + t0 * m.n_in, c0, c1);
        }
      },
      1);
  if (w.m.padded()) {
    float* out = cpu_data(dx);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < w.m.n_in; ++c) out[t * w.m.n_in + c] += dxp[t * m.n_in + c];
    }
  }
}

}  // namespace trit::engine
