// Backend parity for the training ops (STYLE habit 5): every op that training adds to backend.h
// (the backward ops, the LoRA branches saving their inputs, the head with the loss, the
// optimizer ops) on the Vulkan backend without a binding limit against the CPU backend, and at a
// limit of 128 KiB against the untiled Vulkan run. The shapes are small, so that a CPU Vulkan
// driver (lavapipe) runs the suite in seconds, and the limit is scaled down with them: tensors
// of 100 tokens x 2048 activations, ternary weights of 160 and 192 KiB and a 512 KiB head (in
// f16) come in several pieces, most with a partial last piece. Backward ops ADD into their outputs,
// so every gradient output starts with random values of the size of what the op adds (measured by a
// first CPU run into zeros) and the sum is compared. Thresholds are relative to the largest |value|
// of each output: 1e-5, except where a case says otherwise. DESIGN section 6 also asks that a
// result with any limit equal the untiled result: MatchCpuAndUntiled checks that bit for bit.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "model/model.h"
#include "support/vulkan.h"

namespace trit::engine {
namespace {

using namespace test;  // NOLINT: the shared Vulkan test helpers

constexpr int64_t N = 100;  // tokens of most cases

// Gradient outputs prefilled with random values. Before learn() every fill is 0; learn() takes
// the largest |value| of each output of a run into zeros, m, and later fills have sd m / 3: the
// prior contents and what the op adds weigh alike in the sum compared.
class Fill {
 public:
  TensorPtr operator()(Backend& b, const std::string& name, int64_t rows, int64_t cols,
                       uint64_t seed) const {
    const auto it = scale_.find(name);
    if (it == scale_.end())
      return upload(b, name, rows, cols, std::vector<float>(size_t(rows * cols)));
    return upload(b, name, rows, cols, randn(rows * cols, seed, it->second));
  }
  void learn(const std::vector<Out>& outs) {
    for (const Out& o : outs) {
      float m = 0;
      for (float v : o.v) m = std::max(m, std::fabs(v));
      scale_[o.label] = m > 0 ? m / 3 : 1.0f;  // untouched outputs still get a non-zero fill
    }
  }

 private:
  std::map<std::string, float> scale_;
};

// With TRIT_PRINT_ERRORS=1 the tests print each output's relative error (for setting thresholds).
void print_error(const std::string& where, const Out& want, const std::vector<float>& got) {
  const char* e = std::getenv("TRIT_PRINT_ERRORS");
  if (!e || std::string(e) != "1" || got.size() != want.v.size()) return;
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(double(want.v[i])));
    max_abs = std::max(max_abs, std::fabs(double(got[i]) - want.v[i]));
  }
  std::printf("%s: %s: relative error %.3g\n", where.c_str(), want.label.c_str(),
              max_abs / std::max(max_ref, 1e-30));
}

using Runner = std::function<std::vector<Out>(Backend&, const Fill&)>;

struct TrainCase {
  TrainCase(std::string n, std::function<Runner()> b, std::string r = "")
      : name(std::move(n)), build(std::move(b)), may_refuse(std::move(r)) {}
  TrainCase(std::string n, Runner run, std::string r = "")
      : TrainCase(
            std::move(n), [run] { return run; }, std::move(r)) {}
  std::string name;
  std::function<Runner()> build;  // makes the host weights, shared by every run of the runner
  std::string may_refuse;         // '|'-separated words a Vulkan refusal may name instead
};

// Rows of very different magnitudes (x 2^-2 .. 2^2), as the residual stream has.
std::vector<float> rows_of_scales(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> v = randn(rows * cols, seed);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t j = 0; j < cols; ++j) v[size_t(t * cols + j)] *= std::ldexp(1.0f, int(t % 5) - 2);
  }
  return v;
}

std::vector<float> norm_weight(int64_t cols, uint64_t seed) {
  std::vector<float> g = randn(cols, seed, 0.1f);
  for (float& v : g) v += 1.0f;
  return g;
}

// rms_norm with the saved rstd (n, 1).
TrainCase rms_norm_case(int64_t n, int64_t cols) {
  return {cat("rms_norm_rstd_", n, "x", cols), [=](Backend& b, const Fill&) {
            const std::vector<float> g = norm_weight(cols, 1);
            TensorPtr x = upload(b, "x", n + 2, cols, rows_of_scales(n + 2, cols, 2));
            TensorPtr y = b.tensor("y", n + 2, cols);
            TensorPtr rstd = upload(b, "rstd", n + 2, 1, randn(n + 2, 3));
            b.rms_norm(
                {.x = x.get(), .g = g.data(), .eps = 1e-5f, .y = y.get(), .rstd = rstd.get()}, n);
            return std::vector<Out>{download(b, *y, n, 1e-5), download(b, *rstd, n + 2, 1e-5)};
          }};
}

// rstd computed on the host (double), so the case tests the backward alone.
TrainCase rms_norm_backward_case(int64_t n, int64_t cols) {
  return {cat("rms_norm_backward_", n, "x", cols), [=](Backend& b, const Fill& fill) {
            const std::vector<float> g = norm_weight(cols, 4), xv = rows_of_scales(n, cols, 5);
            std::vector<float> rv(static_cast<size_t>(n));
            for (int64_t t = 0; t < n; ++t) {
              double ss = 0;
              for (int64_t j = 0; j < cols; ++j)
                ss += double(xv[size_t(t * cols + j)]) * xv[size_t(t * cols + j)];
              rv[size_t(t)] = float(1.0 / std::sqrt(ss / double(cols) + 1e-5));
            }
            TensorPtr x = upload(b, "x", n, cols, xv), rstd = upload(b, "rstd", n, 1, rv);
            TensorPtr dy = upload(b, "dy", n + 1, cols, randn((n + 1) * cols, 6));
            TensorPtr dx = fill(b, "dx", n + 1, cols, 7);
            b.rms_norm_backward(*dx, *dy, *x, g.data(), *rstd, n);
            return std::vector<Out>{download(b, *dx, n + 1, 1e-5)};  // row n untouched
          }};
}

// A LoRA branch on a layer of n_in -> n_out (A: kaiming-like, B non-zero), scale alpha / r.
struct Branch {
  TensorPtr a, b, da, db;
  LoraBranch br;
  Branch(Backend& be, const Fill& fill, int64_t n_in, int64_t n_out, int64_t r, uint64_t seed,
         const std::string& tag = "") {
    a = upload(be, "a" + tag, r, n_in, randn(r * n_in, seed, 1.0f / std::sqrt(float(n_in))));
    b = upload(be, "b" + tag, n_out, r, randn(n_out * r, seed + 1, 0.05f));
    da = fill(be, "da" + tag, r, n_in, seed + 2);
    db = fill(be, "db" + tag, n_out, r, seed + 3);
    br = {a.get(), b.get(), da.get(), db.get(), 8.0f / float(r), 17 + seed};
  }
};

// p > 0: xd equals x / (1 - p) where kept, and the dropped elements (a mask) agree exactly.
TrainCase lora_forward_case(int64_t n, int64_t n_in, int64_t n_out, int64_t r, float p) {
  return {cat("lora_forward_", n_in, "x", n_out, "_r", r, p > 0 ? "_dropout" : ""),
          [=](Backend& b, const Fill& fill) {
            Branch L(b, fill, n_in, n_out, r, 10);
            TensorPtr x = upload(b, "x", n + 1, n_in, randn((n + 1) * n_in, 11));
            TensorPtr y = fill(b, "y", n + 1, n_out, 12);
            // Saved activations are overwritten: start them with garbage.
            TensorPtr xd = upload(b, "xd", n + 1, n_in, randn((n + 1) * n_in, 13));
            TensorPtr ax = upload(b, "ax", n + 1, r, randn((n + 1) * r, 14));
            b.lora_forward(*y, *x, n, L.br, LoraSaved{xd.get(), ax.get()}, p, 0x5eed);
            Out xdo = download(b, *xd, n, p > 0 ? 1e-6 : 0);
            Out dropped{"dropped", n_in, std::vector<float>(xdo.v.size()), 0};
            for (size_t i = 0; i < xdo.v.size(); ++i) dropped.v[i] = xdo.v[i] == 0.0f;
            return std::vector<Out>{download(b, *y, n + 1, 1e-5), xdo, dropped,
                                    download(b, *ax, n, 1e-5)};
          },
          p > 0 ? "dropout" : ""};
}

// xd with about a fraction p of zeros (dropped) when p > 0; ax = xd A^T on the host.
TrainCase lora_backward_case(int64_t n, int64_t n_in, int64_t n_out, int64_t r, float p) {
  return {cat("lora_backward_", n_in, "x", n_out, "_r", r, p > 0 ? "_dropout" : ""),
          [=](Backend& b, const Fill& fill) {
            Branch L(b, fill, n_in, n_out, r, 20);
            std::vector<float> xv = randn(n * n_in, 21), av(size_t(r * n_in));
            std::mt19937_64 rng(22);
            for (float& v : xv) v = p > 0 && double(rng() % 1000) < 1000 * p ? 0 : v / (1 - p);
            b.read(*L.a, 0, r, av.data());
            std::vector<float> axv(size_t(n * r));
            for (int64_t t = 0; t < n; ++t) {
              for (int64_t k = 0; k < r; ++k) {
                double s = 0;
                for (int64_t j = 0; j < n_in; ++j)
                  s += double(xv[size_t(t * n_in + j)]) * av[size_t(k * n_in + j)];
                axv[size_t(t * r + k)] = float(s);
              }
            }
            TensorPtr xd = upload(b, "xd", n, n_in, xv), ax = upload(b, "ax", n, r, axv);
            TensorPtr dy = upload(b, "dy", n, n_out, randn(n * n_out, 23));
            TensorPtr dx = fill(b, "dx", n + 1, n_in, 24);
            b.lora_backward(*dx, *dy, LoraSaved{xd.get(), ax.get()}, n, L.br, p);
            return std::vector<Out>{download(b, *dx, n + 1, 1e-5), download(b, *L.da, r, 1e-5),
                                    download(b, *L.db, n_out, 1e-5)};
          },
          p > 0 ? "dropout" : ""};
}

TrainCase linear_backward_case(DType type, bool block_scales, int64_t n, int64_t n_in,
                               int64_t n_out, float out_scale, int64_t row_in = 0) {
  return {cat("linear_backward_", dtype_name(type), block_scales ? "_blocks_" : "_", n, "x", n_in,
              "x", n_out, out_scale != 1 ? "_out_scale" : "", row_in ? "_padded" : ""),
          [=] {
            std::shared_ptr<HostWeight> w =
                ternary_weight(type, n_in, n_out, block_scales, 30, row_in);
            w->w.out_scale = out_scale;
            return Runner([=](Backend& b, const Fill& fill) {
              TensorPtr dy = upload(b, "dy", n + 1, n_out, randn((n + 1) * n_out, 31));
              TensorPtr dx = fill(b, "dx", n + 1, n_in, 32);
              b.linear_backward(*dx, *dy, w->w, n);
              return std::vector<Out>{download(b, *dx, n + 1, 1e-5)};
            });
          }};
}

// 16 query and 4 KV heads of 128.
AttnShape rope_shape(int64_t rope_dim, float theta) {
  return {.n_head = 16, .n_head_kv = 4, .head_dim = 128, .rope_dim = rope_dim, .rope_theta = theta};
}

TrainCase rope_backward_case(int64_t n, int64_t rope_dim, float theta) {
  return {cat("rope_backward_", n, "_dim", rope_dim), [=](Backend& b, const Fill&) {
            const AttnShape shape = rope_shape(rope_dim, theta);
            TensorPtr dq = upload(b, "dq", n + 1, 2048, randn((n + 1) * 2048, 41));
            TensorPtr dk = upload(b, "dk", n + 1, 512, randn((n + 1) * 512, 42));
            b.rope_backward(*dq, 0, n, shape.n_head, shape, 0);
            b.rope_backward(*dk, 0, n, shape.n_head_kv, shape, 0);
            return std::vector<Out>{download(b, *dq, n + 1, 1e-5), download(b, *dk, n + 1, 1e-5)};
          }};
}

// 8 query heads of head_dim (64 unless given) over 8 / group KV heads (at 128 KiB q, dout and dq
// of more than 64 tokens come in pieces, and with group 1 k, v, dk and dv too). 1e-5 holds
// although dS = P * (dP - rowsum(P * dP)) cancels and a GPU's exp need not be correctly rounded
// (lavapipe: 4e-7).
TrainCase attention_backward_case(int64_t group, int64_t n, int64_t head_dim = 64) {
  return {
      cat("attention_backward_group", group, "_n", n, head_dim == 64 ? "" : cat("_hd", head_dim)),
      [=](Backend& b, const Fill& fill) {
        const AttnShape shape{
            .n_head = 8, .n_head_kv = 8 / group, .head_dim = head_dim, .rope_dim = head_dim};
        const int64_t d = shape.q_cols(), kv = shape.kv_cols();
        TensorPtr q = upload(b, "q", n + 1, d, randn((n + 1) * d, 51));
        TensorPtr k = upload(b, "k", n + 1, kv, randn((n + 1) * kv, 52));
        TensorPtr v = upload(b, "v", n + 1, kv, randn((n + 1) * kv, 53));
        TensorPtr dout = upload(b, "dout", n + 1, d, randn((n + 1) * d, 54));
        TensorPtr dq = fill(b, "dq", n + 1, d, 55), dk = fill(b, "dk", n + 1, kv, 56);
        TensorPtr dv = fill(b, "dv", n + 1, kv, 57);
        const SeqRows whole{0, n, 0, 0};
        b.attention_backward(*dq, *dk, *dv, *dout, *q, *k, *v, {&whole, 1}, shape);
        return std::vector<Out>{download(b, *dq, n + 1, 1e-5), download(b, *dk, n + 1, 1e-5),
                                download(b, *dv, n + 1, 1e-5)};
      }};
}

// Training's packed sequences (lengths 37, 1 and 50 in rows 0..88, each its own keys from a
// row off the attention chunks): attention forward, rope's backward from each sequence's first
// row and attention backward over all three at once.
TrainCase packed_attention_case(int64_t group) {
  return {cat("packed_attention_group", group), [=](Backend& b, const Fill& fill) {
            const AttnShape shape{
                .n_head = 8, .n_head_kv = 8 / group, .head_dim = 64, .rope_dim = 64};
            const int64_t d = shape.q_cols(), kv = shape.kv_cols(), n = 89;
            const std::vector<SeqRows> seqs = {{0, 37, 0, 0}, {37, 1, 0, 37}, {38, 50, 0, 38}};
            TensorPtr q = upload(b, "q", n, d, randn(n * d, 71));
            TensorPtr k = upload(b, "k", n, kv, randn(n * kv, 72));
            TensorPtr v = upload(b, "v", n, kv, randn(n * kv, 73));
            TensorPtr att = upload(b, "att", n, d, std::vector<float>(size_t(n * d)));
            b.attention(*att, *q, *k, *v, seqs, shape);
            TensorPtr dout = upload(b, "dout", n, d, randn(n * d, 74));
            TensorPtr dq = fill(b, "dq", n, d, 75), dk = fill(b, "dk", n, kv, 76);
            TensorPtr dv = fill(b, "dv", n, kv, 77);
            b.attention_backward(*dq, *dk, *dv, *dout, *q, *k, *v, seqs, shape);
            for (const SeqRows& s : seqs) {
              b.rope_backward(*dq, s.row0, s.n, shape.n_head, shape, 0);
              b.rope_backward(*dk, s.row0, s.n, shape.n_head_kv, shape, 0);
            }
            return std::vector<Out>{download(b, *att, n, 1e-5), download(b, *dq, n, 1e-5),
                                    download(b, *dk, n, 1e-5), download(b, *dv, n, 1e-5)};
          }};
}

TrainCase gated_act_backward_case(Activation act) {
  return {
      cat("gated_act_backward_", activation_name(act)), [=](Backend& b, const Fill& fill) {
        const int64_t cols = 2816;
        TensorPtr gate = upload(b, "gate", N + 1, cols, randn((N + 1) * cols, 61, 2.0f));
        TensorPtr up = upload(b, "up", N + 1, cols, randn((N + 1) * cols, 62));
        TensorPtr dout = upload(b, "dout", N + 1, cols, randn((N + 1) * cols, 63));
        TensorPtr dgate = fill(b, "dgate", N + 1, cols, 64);
        TensorPtr dup = fill(b, "dup", N + 1, cols, 65);
        b.gated_act_backward(*dgate, *dup, *dout, *gate, *up, N, act);
        return std::vector<Out>{download(b, *dgate, N + 1, 1e-5), download(b, *dup, N + 1, 1e-5)};
      }};
}

// The LM head and loss over N tokens of 256 against 1024 x 256 weights (512 KiB in f16: 4 pieces
// at 128 KiB, which also holds the logits of 32 tokens a segment).
struct HeadSpec {
  DType type;
  std::vector<int64_t> ranks;  // head LoRA branches
  bool dh;                     // backward too
  bool mask;                   // a mask that skips chunk 1 whole and every 7th token
  int64_t chunk;
  bool twice = false;  // two head calls (rows [0, 40), then all) before take_loss
};

TrainCase head_loss_case(HeadSpec s) {
  std::string name = cat("head_loss_", dtype_name(s.type), "_chunk", s.chunk);
  for (int64_t r : s.ranks) name += cat("_r", r);
  name += cat(s.dh ? "_dh" : "", s.mask ? "_mask" : "", s.twice ? "_twice" : "");
  return {name, [=] {
            auto bytes = std::make_shared<std::vector<uint8_t>>();
            const FloatMatrix w = float_matrix(*bytes, s.type, 256, 1024, 71, 0.05f);
            return Runner([=](Backend& b, const Fill& fill) {
              std::vector<float> mask(static_cast<size_t>(N), 1.0f);
              std::vector<int32_t> targets(static_cast<size_t>(N));
              std::mt19937_64 rng(72);
              float norm = 0;
              for (int64_t t = 0; t < N; ++t) {
                if (s.mask && ((t >= s.chunk && t < 2 * s.chunk) || t % 7 == 3))
                  mask[size_t(t)] = 0;
                targets[size_t(t)] = mask[size_t(t)] != 0 ? int32_t(rng() % 1024) : -100;
                norm += mask[size_t(t)];
              }
              norm *= 1.5f;  // the step's count includes other sequences
              std::vector<std::unique_ptr<Branch>> branches;
              std::vector<LoraBranch> brs;
              for (size_t j = 0; j < s.ranks.size(); ++j) {
                branches.push_back(
                    std::make_unique<Branch>(b, fill, 256, 1024, s.ranks[j], 80 + 10 * j, cat(j)));
                brs.push_back(branches.back()->br);
              }
              TensorPtr h = upload(b, "h", N + 1, 256, randn((N + 1) * 256, 73));
              TensorPtr dh = s.dh ? fill(b, "dh", N + 1, 256, 74) : nullptr;
              const float* m = s.mask ? mask.data() : nullptr;
              // The loss of rows [0, rows) (HeadOp with targets), with dh its gradients too.
              auto head_loss = [&](int64_t rows) {
                b.head({.h = h.get(),
                        .row0 = 0,
                        .n = rows,
                        .w = &w,
                        .lora = brs,
                        .targets = targets.data(),
                        .mask = m,
                        .norm = norm,
                        .chunk = s.chunk,
                        .dh = dh.get()});
              };
              if (s.twice) head_loss(40);
              head_loss(N);
              const double loss = b.take_loss(), again = b.take_loss();
              std::vector<Out> outs{{"loss", 1, {float(loss)}, 1e-6},
                                    {"loss again", 1, {float(again)}, 0}};
              if (dh) outs.push_back(download(b, *dh, N + 1, 1e-5));
              for (const auto& br : branches) {
                outs.push_back(download(b, *br->da, br->da->rows(), 1e-5));
                outs.push_back(download(b, *br->db, br->db->rows(), 1e-5));
              }
              (void)bytes;
              return outs;
            });
          }};
}

// Two AdamW steps (the second with a clipping factor) of a (rows, cols) parameter; the moments
// and the parameter are compared. Where PyTorch fuses, the device may round differently, and
// its sqrt and division are not correctly rounded: 1e-5 of each tensor's largest value.
TrainCase adamw_case(int64_t rows, int64_t cols) {
  return {cat("adamw_", rows, "x", cols), [=](Backend& b, const Fill&) {
            const int64_t n = rows * cols;
            TensorPtr p = upload(b, "p", rows, cols, randn(n, 31, 0.05f));
            TensorPtr m = b.tensor("m", rows, cols), v = b.tensor("v", rows, cols);
            AdamWScalars k{0.99999f, 0.1f, 0.999f, 0.001f, 0.0316069f, 1e-8f, -0.001f};
            TensorPtr g1 = upload(b, "g1", rows, cols, randn(n, 32, 0.3f));
            TensorPtr g2 = upload(b, "g2", rows, cols, randn(n, 33, 2.0f));
            b.adamw(*p, *g1, *m, *v, k, 1.0f);
            k = {0.99999f, 0.1f, 0.999f, 0.001f, 0.0447102f, 1e-8f, -0.000526316f};
            b.adamw(*p, *g2, *m, *v, k, 0.25f);
            return std::vector<Out>{download(b, *p, rows, 1e-5, true),
                                    download(b, *m, rows, 1e-5, true),
                                    download(b, *v, rows, 1e-5, true)};
          }};
}

// Sums of squares of tensors of very different row lengths (a LoRA A and B, and a large one).
TrainCase sum_squares_case() {
  return {"sum_squares", [=](Backend& b, const Fill&) {
            TensorPtr a = upload(b, "a", 8, 2048, randn(8 * 2048, 41));
            TensorPtr bt = upload(b, "b", 5632, 8, randn(5632 * 8, 42, 1e-3f));
            TensorPtr big = upload(b, "big", N, 2048, rows_of_scales(N, 2048, 43));
            const DeviceTensor* ts[] = {a.get(), bt.get(), big.get()};
            double sums[3];
            b.sum_squares(ts, sums);
            Out o{"sums", 1, {}, 1e-5, true};
            for (double s : sums) o.v.push_back(float(s));
            return std::vector<Out>{o};
          }};
}

std::vector<TrainCase> train_cases() {
  const DType TQ2 = DType::TQ2_0, I2S = DType::I2_S;
  std::vector<TrainCase> c;
  c.push_back({"zero", [](Backend& b, const Fill&) {
                 TensorPtr t = upload(b, "t", 1031, 256, randn(1031 * 256, 1));
                 TensorPtr odd = upload(b, "odd", 333, 77, randn(333 * 77, 2));
                 b.zero(*t);
                 b.zero(*odd);
                 return std::vector<Out>{download(b, *t, 1031, 0), download(b, *odd, 333, 0)};
               }});
  c.push_back({"copy", [](Backend& b, const Fill&) {
                 TensorPtr src = upload(b, "src", N + 2, 2048, randn((N + 2) * 2048, 3));
                 TensorPtr dst = upload(b, "dst", N + 2, 2048, randn((N + 2) * 2048, 4));
                 b.copy(*dst, *src, N);  // rows N, N + 1 keep their values
                 return std::vector<Out>{download(b, *dst, N + 2, 0)};
               }});
  c.push_back(rms_norm_case(N, 2048));
  c.push_back(rms_norm_case(77, 5632));
  c.push_back(rms_norm_backward_case(N, 2048));
  c.push_back(rms_norm_backward_case(77, 5632));
  for (float p : {0.0f, 0.1f}) {
    for (int64_t r : {4, 16}) {
      c.push_back(lora_forward_case(N, 2048, 512, r, p));
      c.push_back(lora_backward_case(N, 2048, 512, r, p));
    }
    c.push_back(lora_forward_case(N, 512, 2048, 16, p));
    c.push_back(lora_backward_case(N, 512, 2048, 16, p));
  }
  // Widths and token counts that leave the short-k product's 64-column and 32-row blocks part
  // full; rank 32 (its largest k) and 48 (gemm_f32's tiles).
  for (int64_t r : {7, 32, 48}) {
    c.push_back(lora_forward_case(77, 320, 200, r, 0.0f));
    c.push_back(lora_backward_case(77, 200, 320, r, 0.0f));
  }
  // Codes of 192 B a row (768 inputs; 1024 rows: 2 pieces) and of 320 B (1280 inputs, five
  // blocks of 256; 512 rows: 2 pieces).
  c.push_back(linear_backward_case(TQ2, false, N, 768, 1024, 1));
  c.push_back(linear_backward_case(TQ2, true, N, 768, 1024, 1.25f));
  c.push_back(linear_backward_case(I2S, false, N, 768, 1024, 0.75f));
  c.push_back(linear_backward_case(DType::TQ1_0, true, N, 768, 1024, 1));
  c.push_back(linear_backward_case(TQ2, false, 1, 768, 1024, 1));
  c.push_back(linear_backward_case(TQ2, true, 77, 1280, 512, 1));
  c.push_back(linear_backward_case(I2S, false, 77, 1280, 512, 1));
  c.push_back(linear_backward_case(I2S, false, 77, 384, 512, 1));           // device-padded
  c.push_back(linear_backward_case(TQ2, false, 77, 864, 320, 0.5f, 1024));  // host-padded
  c.push_back(rope_backward_case(N, 128, 10000.0f));
  c.push_back(rope_backward_case(77, 64, 500000.0f));
  for (int64_t group : {1, 4}) {
    for (int64_t n : {1, 33, 77}) c.push_back(attention_backward_case(group, n));
    c.push_back(packed_attention_case(group));
  }
  c.push_back(attention_backward_case(1, 150, 128));  // three query tiles of the one-piece path
  c.push_back(gated_act_backward_case(Activation::Relu2));
  c.push_back(gated_act_backward_case(Activation::Silu));
  const DType F16 = DType::F16, Q8 = DType::Q8_0;
  for (DType t : {F16, Q8}) {
    c.push_back(head_loss_case({t, {}, false, false, 32}));
    c.push_back(head_loss_case({t, {}, true, true, 32}));
    c.push_back(head_loss_case({t, {4, 16}, true, true, 77}));
  }
  c.push_back(head_loss_case({F16, {}, true, false, 512}));   // one chunk of all N tokens
  c.push_back(head_loss_case({F16, {16}, false, true, 77}));  // no dh: da, db untouched
  c.push_back(head_loss_case({Q8, {4}, true, true, 7, true}));
  c.push_back(adamw_case(N, 2048));
  c.push_back(adamw_case(5632, 8));
  c.push_back(sum_squares_case());
  return c;
}

void PrintTo(const TrainCase& c, std::ostream* os) {
  *os << c.name;
}

class VulkanTrainOps : public ::testing::TestWithParam<std::tuple<TrainCase, uint64_t>> {
 protected:
  // The case on the CPU (the reference) with fills sized by a first run into zeros.
  std::vector<Out> reference(const Runner& run) {
    ThreadPool pool(n_threads());
    CpuBackend cpu(pool);
    fill_.learn(run(cpu, fill_));
    return run(cpu, fill_);
  }
  // The case on a Vulkan backend; a refusal the case allows sets refused_ (empty result).
  std::vector<Out> on(Backend& vk, const TrainCase& c, const Runner& run) {
    try {
      return run(vk, fill_);
    } catch (const Error& e) {
      if (c.may_refuse.empty()) {
        ADD_FAILURE() << c.name << ": " << e.what();
      } else if (!names_one_of(e.what(), c.may_refuse)) {
        ADD_FAILURE() << "the error should name " << c.may_refuse << ": " << e.what();
      } else {
        refused_ = cat("the Vulkan backend refuses ", c.name, ": ", e.what());
      }
      return {};
    }
  }
  Fill fill_;
  std::string refused_;
};

// The op on Vulkan without a limit against the CPU backend (per-op threshold), then at the
// parameter's binding limit against the untiled Vulkan run, bit for bit (DESIGN section 6).
TEST_P(VulkanTrainOps, MatchCpuAndUntiled) {
  const auto& [c, limit] = GetParam();
  const Runner run = c.build();  // first: the host weights outlive the backends
  std::unique_ptr<Backend> tiled_vk, whole_vk;
  open_vulkan(limit, &tiled_vk);
  if (!tiled_vk) return;
  open_vulkan(0, &whole_vk);
  if (!whole_vk) return;
  const std::vector<Out> want = reference(run);
  const std::vector<Out> untiled = on(*whole_vk, c, run);
  if (!refused_.empty()) GTEST_SKIP() << refused_;
  if (untiled.empty()) return;
  ASSERT_EQ(untiled.size(), want.size());
  const std::string where = cat(c.name, " without a binding limit");
  for (size_t k = 0; k < want.size(); ++k) {
    print_error(where, want[k], untiled[k].v);
    expect_match(want[k], untiled[k].v, want[k].tol, where);
  }
  const std::vector<Out> tiled = on(*tiled_vk, c, run);
  if (tiled.empty()) return;
  ASSERT_EQ(tiled.size(), untiled.size());
  const std::string tiled_where =
      cat(c.name, " at binding limit ", limit_name(limit), " against unlimited");
  for (size_t k = 0; k < untiled.size(); ++k) {
    expect_match(untiled[k], tiled[k].v, 0, tiled_where);
  }
}

// The attention backward's two layouts (register tiles over every sequence at once, which
// batches in one piece take; a workgroup per query and per key, one sequence at a time) give the
// same bits, with and without pieces (where the tiles step aside). head_dim 128 with 150 tokens
// (three query tiles, five key tiles) and head_dim 32 reach the tiles' other loop lengths.
TEST(VulkanAttentionBackward, BothLayoutsGiveTheSameBits) {
  std::vector<TrainCase> cases;
  for (int64_t group : {1, 4}) {
    cases.push_back(attention_backward_case(group, 77));
    cases.push_back(packed_attention_case(group));
  }
  cases.push_back(attention_backward_case(1, 150, 128));
  cases.push_back(attention_backward_case(2, 77, 128));
  cases.push_back(attention_backward_case(4, 40, 32));
  for (const TrainCase& c : cases) {
    const Runner run = c.build();
    Fill fill;  // the gradients start from values of their size (the sums add to them)
    for (uint64_t limit : {uint64_t(0), 128 * KiB}) {
      std::vector<Out> got[2];
      for (int tiled : {0, 1}) {
        std::unique_ptr<Backend> vk;
        {
          const ScopedEnv env("TRIT_VK_ATTN_BWD_TILED", tiled ? "1" : "0");
          open_vulkan(limit, &vk);
        }
        if (!vk) return;
        if (limit == 0 && tiled == 0) fill.learn(run(*vk, fill));
        got[tiled] = run(*vk, fill);
      }
      ASSERT_EQ(got[0].size(), got[1].size());
      for (size_t k = 0; k < got[0].size(); ++k) {
        expect_match(got[0][k], got[1][k].v, 0, cat(c.name, " at ", limit_name(limit)));
      }
    }
  }
}

// 128 KiB forces pieces on every case but the attention of 1 and 33 tokens; the forward ops' suite
// (ops_test.cpp) runs 64 and 512 KiB. Each case runs once per limit on a CPU Vulkan driver, so the
// list stays short.
INSTANTIATE_TEST_SUITE_P(VulkanTrainLimits, VulkanTrainOps,
                         ::testing::Combine(::testing::ValuesIn(train_cases()),
                                            ::testing::Values(128 * KiB)),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" +
                                  limit_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace trit::engine
