// Causal GQA attention forward and backward: the reference (ops.h) and the CPU backend's ops,
// with the KV store.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "backend/cpu/attention_rows.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/exp_lanes.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {
namespace {

// y += a * x over n
void axpy_f32(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Scores s_j for j in [0, n) to e_j = exp(s_j - max) in their place; returns sum_j e_j, with
// the max in *max_score. The sum runs in four interleaved chains (e_j into chain j % 4, in
// order; then (c0 + c1) + (c2 + c3)): one chain of dependent adds took a sixth of a long
// prompt's attention. Every softmax of the forward and backward passes goes through it.
float exp_scores(float* s, int64_t n, float* max_score) {
  const float m = max_of(s, n);
  exp_shifted(s, n, m);
  float c[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int k = 0; k < 4; ++k) c[k] += s[j + k];
  }
  for (int k = 0; j < n; ++j, ++k) c[k] += s[j];
  *max_score = m;
  return (c[0] + c[1]) + (c[2] + c[3]);
}

// The softmax of one query's backward pass from its scores s_j (attention_rows_scores) for
// keys [0, n), recomputed as attention_forward computes it: P_j in their place, dP_j =
// dout . v_j in dp; returns D = sum_j P_j dP_j, with the scores' max and 1 / sum in *max_score
// and *inv when given.
float softmax_from_scores(float* s, int64_t n, const float* doh, const float* v, int64_t kv_stride,
                          int64_t head_dim, float* dp, float* max_score = nullptr,
                          float* inv = nullptr) {
  float m = 0;
  const float r = 1.0f / exp_scores(s, n, &m);
  if (max_score) *max_score = m;
  if (inv) *inv = r;
  attention_value_dots(dp, doh, v, kv_stride, n, head_dim);
  float big_d = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] *= r;
    big_d += s[j] * dp[j];
  }
  return big_d;
}

}  // namespace

int64_t attention_forward_scratch(int64_t n_keys, int64_t head_dim) {
  return attention_tile_floats(head_dim) + kAttnRows * n_keys;
}

void attention_forward(const float* q, const float* k, const float* v, int64_t kv_stride,
                       int64_t n_tokens, int64_t pos0, int64_t n_head, int64_t n_head_kv,
                       int64_t head_dim, int64_t h0, int64_t h1, float* out, float* scratch,
                       int64_t kv_head0) {
  const int64_t group = n_head / n_head_kv;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const int64_t ld = pos0 + n_tokens;  // the most keys a row has
  float* tile = scratch;
  float* scores = scratch + attention_tile_floats(head_dim);
  for (int64_t g = h0 / group; g * group < h1; ++g) {
    const int64_t ha = std::max(h0, g * group), hb = std::min(h1, (g + 1) * group);
    const int64_t nh = hb - ha, n_rows = n_tokens * nh;
    const float* kg = k + (g - kv_head0) * head_dim;
    const float* vg = v + (g - kv_head0) * head_dim;
    // The group's (token, head) rows, heads fastest, kAttnRows at a time: they share each tile
    // of transposed keys (attention_rows.h).
    for (int64_t r0 = 0; r0 < n_rows; r0 += kAttnRows) {
      const int64_t nr = std::min(kAttnRows, n_rows - r0);
      const float* qs[kAttnRows];
      int64_t n_keys[kAttnRows];
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = (r0 + i) / nh, h = ha + (r0 + i) % nh;
        qs[i] = q + (t * n_head + h) * head_dim;
        n_keys[i] = pos0 + t + 1;
      }
      attention_rows_scores(qs, n_keys, nr, kg, kv_stride, head_dim, scale, scores, ld, tile);
      float* outs[kAttnRows];
      float inv[kAttnRows];
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = (r0 + i) / nh, h = ha + (r0 + i) % nh;
        float m = 0;
        inv[i] = 1.0f / exp_scores(scores + i * ld, n_keys[i], &m);
        outs[i] = out + (t * n_head + h) * head_dim;
      }
      // Rows of one token (the same keys) read the values together.
      for (int64_t i = 0; i < nr;) {
        int64_t same = 1;
        while (i + same < nr && n_keys[i + same] == n_keys[i]) ++same;
        attention_weighted_values(outs + i, scores + i * ld, ld, inv + i, same, vg, kv_stride,
                                  n_keys[i], head_dim);
        i += same;
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, int64_t kv_stride, int64_t n_tokens,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t kvh0,
                        int64_t kvh1, float* scratch) {
  if (n_head_kv <= 0 || n_head % n_head_kv != 0) {
    fail("attention_backward: ", n_head, " query heads are not a multiple of ", n_head_kv,
         " KV heads");
  }
  if (kvh0 < 0 || kvh1 < kvh0 || kvh1 > n_head_kv) {
    fail("attention_backward: KV heads [", kvh0, ", ", kvh1, ") outside 0..", n_head_kv);
  }
  const int64_t group = n_head / n_head_kv;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  float* tile = scratch;
  float* scores = tile + attention_tile_floats(head_dim);  // (kAttnRows, n_tokens)
  float* dp = scores + kAttnRows * n_tokens;               // (n_tokens) dout . v_j
  for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
    // The group's (head, token) rows in order, kAttnRows at a time: their scores first (one
    // tile of transposed keys serves them all), then each row's softmax and gradients in the
    // order the reference takes them.
    const int64_t n_rows = group * n_tokens;
    for (int64_t r0 = 0; r0 < n_rows; r0 += kAttnRows) {
      const int64_t nr = std::min(kAttnRows, n_rows - r0);
      const float* qs[kAttnRows];
      int64_t n_keys[kAttnRows];
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t h = kvh * group + (r0 + i) / n_tokens, t = (r0 + i) % n_tokens;
        qs[i] = q + (t * n_head + h) * head_dim;
        n_keys[i] = t + 1;
      }
      attention_rows_scores(qs, n_keys, nr, k + kvh * head_dim, kv_stride, head_dim, scale, scores,
                            n_tokens, tile);
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t h = kvh * group + (r0 + i) / n_tokens, t = (r0 + i) % n_tokens;
        const int64_t nk = n_keys[i];
        const float* qh = qs[i];                                // (head_dim)
        const float* doh = dout + (t * n_head + h) * head_dim;  // (head_dim)
        float* dqh = dq + (t * n_head + h) * head_dim;          // (head_dim)
        float* p = scores + i * n_tokens;
        // P: recomputed exactly as attention_forward does; dP = dout v^T and
        // D = sum_j P_j dP_j (= dout . out)
        const float big_d =
            softmax_from_scores(p, nk, doh, v + kvh * head_dim, kv_stride, head_dim, dp);
        // dv, then dS / sqrt(head_dim) in p, then dq and dk
        attention_backward_row(p, dp, big_d, scale, nk, qh, doh, dqh, k + kvh * head_dim,
                               dk + kvh * head_dim, dv + kvh * head_dim, kv_stride, head_dim);
      }
    }
  }
}

int64_t attention_backward_scratch(int64_t n_tokens, int64_t head_dim) {
  return attention_tile_floats(head_dim) + (kAttnRows + 1) * n_tokens;
}

void CpuBackend::store_kv(DeviceTensor& cache, const DeviceTensor& src, int64_t row0, int64_t n,
                          int64_t pos0) {
  check_rows(cache, pos0, n, "store_kv");
  check_rows(src, row0, n, "store_kv");
  if (cache.cols() != src.cols()) {
    fail("store_kv: cache '", cache.name(), "' has ", cache.cols(), " columns, '", src.name(), "' ",
         src.cols());
  }
  const float* s = cpu_data(src) + row0 * src.cols();
  if (cache.f16()) {
    float_to_half(s, cpu_half(cache) + pos0 * cache.cols(), n * src.cols());
    return;
  }
  std::copy(s, s + n * src.cols(), cpu_data(cache) + pos0 * cache.cols());
}

namespace {

// One KV head's keys or values, rows [0, n) of an f16 cache from row r0, as f32 rows of
// head_dim.
void head_to_f32(const DeviceTensor& cache, int64_t r0, int64_t n, int64_t kvh, int64_t hd,
                 float* out) {
  const uint16_t* c = cpu_half(cache) + r0 * cache.cols() + kvh * hd;
  for (int64_t j = 0; j < n; ++j) half_to_float(c + j * cache.cols(), out + j * hd, hd);
}

}  // namespace

void CpuBackend::attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                           const DeviceTensor& v_cache, std::span<const SeqRows> seqs,
                           const AttnShape& shape) {
  int64_t most_keys = 0;
  for (const SeqRows& s : seqs) {
    const int64_t n_keys = s.pos0 + s.n;
    if (s.base < 0 || s.pos0 < 0) fail("attention: a sequence at base ", s.base, ", ", s.pos0);
    check_rows(k_cache, s.base, n_keys, "attention");
    check_rows(v_cache, s.base, n_keys, "attention");
    check_rows(q, s.row0, s.n, "attention");
    check_rows(out, s.row0, s.n, "attention");
    most_keys = std::max(most_keys, n_keys);
  }
  if (k_cache.f16() != v_cache.f16()) {
    fail("attention: cache '", k_cache.name(), "' and '", v_cache.name(), "' differ in type");
  }
  const bool f16 = k_cache.f16();
  const int64_t threads = std::max(pool_.size(), 1);
  const int64_t hd = shape.head_dim, group = shape.n_head / std::max<int64_t>(shape.n_head_kv, 1);
  const int64_t scratch = attention_forward_scratch(most_keys, hd);
  if (scores_.size() < size_t(scratch * threads)) scores_.resize(size_t(scratch * threads));
  if (f16 && kv_f32_.size() < size_t(2 * most_keys * hd * threads)) {
    kv_f32_.resize(size_t(2 * most_keys * hd * threads));
  }
  // One split over every (sequence, head) pair: a decoding step of many sequences is one
  // parallel loop, not one per sequence. Each pair's values do not depend on the split. Pairs
  // cost as their queries times keys (a server's step mixes prompt chunks with one-token
  // rows), so threads take them in chunks as they come free.
  const int64_t H = shape.n_head;
  if (!f16 && int64_t(seqs.size()) * H < 2 * threads) {
    attention_split(out, q, k_cache, v_cache, seqs, shape, scratch);
    return;
  }
  const int64_t units = int64_t(seqs.size()) * H;
  pool_.parallel_for_dynamic(
      units,
      [&](int64_t u0, int64_t u1, int thread) {
        float* scores = scores_.data() + thread * scratch;
        for (int64_t u = u0; u < u1;) {
          const SeqRows& s = seqs[size_t(u / H)];
          const int64_t h0 = u % H, h1 = std::min(H, h0 + (u1 - u));
          const float* qs = cpu_data(q) + s.row0 * q.cols();
          float* os = cpu_data(out) + s.row0 * out.cols();
          if (!f16) {
            attention_forward(qs, cpu_data(k_cache) + s.base * k_cache.cols(),
                              cpu_data(v_cache) + s.base * v_cache.cols(), k_cache.cols(), s.n,
                              s.pos0, shape.n_head, shape.n_head_kv, hd, h0, h1, os, scores);
          } else {
            // f16 caches: each KV head's keys and values as f32 rows, then the f32 attention over
            // them (the same operations on the stored values).
            const int64_t n_keys = s.pos0 + s.n;
            float* kf = kv_f32_.data() + 2 * most_keys * hd * thread;
            float* vf = kf + most_keys * hd;
            for (int64_t g = h0 / group; g * group < h1; ++g) {
              head_to_f32(k_cache, s.base, n_keys, g, hd, kf);
              head_to_f32(v_cache, s.base, n_keys, g, hd, vf);
              attention_forward(qs, kf, vf, hd, s.n, s.pos0, shape.n_head, shape.n_head_kv, hd,
                                std::max(h0, g * group), std::min(h1, (g + 1) * group), os, scores,
                                g);
            }
          }
          u += h1 - h0;
        }
      },
      std::max<int64_t>(1, units / (8 * threads)));
}

void CpuBackend::attention_backward(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                                    const DeviceTensor& dout, const DeviceTensor& q,
                                    const DeviceTensor& k, const DeviceTensor& v,
                                    std::span<const SeqRows> seqs, const AttnShape& shape) {
  for (const DeviceTensor* t :
       std::initializer_list<const DeviceTensor*>{&dq, &dout, &q, &dk, &dv, &k, &v}) {
    const bool kv = t == &dk || t == &dv || t == &k || t == &v;
    if (t->cols() != (kv ? shape.kv_cols() : shape.q_cols())) {
      fail("attention_backward: tensor '", t->name(), "' has ", t->cols(), " columns, ",
           kv ? shape.kv_cols() : shape.q_cols(), " expected");
    }
  }
  int64_t longest = 0;
  for (const SeqRows& s : seqs) {
    if (s.pos0 != 0 || s.base != s.row0) {
      fail("attention_backward: a sequence at rows ", s.row0,
           ".. must start at position 0 and be "
           "its own keys (position ",
           s.pos0, ", keys from row ", s.base, ")");
    }
    for (const DeviceTensor* t :
         std::initializer_list<const DeviceTensor*>{&dq, &dout, &q, &dk, &dv, &k, &v}) {
      check_rows(*t, s.row0, s.n, "attention_backward");
    }
    longest = std::max(longest, s.n);
  }
  const int64_t threads = std::max(pool_.size(), 1);
  const int64_t H = shape.n_head_kv, qc = q.cols(), kc = k.cols();
  // Each thread's part: a tile of transposed keys or queries, its rows' scores and dP.
  const int64_t per_thread = attention_backward_scratch(longest, shape.head_dim);
  std::vector<float> scratch(static_cast<size_t>(per_thread * threads));
  if (int64_t(seqs.size()) * H < 2 * threads) {
    attention_backward_split(dq, dk, dv, dout, q, k, v, seqs, shape, scratch.data(), per_thread,
                             longest);
    return;
  }
  // One split over every (sequence, KV head) pair; each pair's sums do not depend on the split.
  // Packed sequences differ in length: pairs taken in chunks as threads come free.
  const int64_t units = int64_t(seqs.size()) * H;
  pool_.parallel_for_dynamic(
      units,
      [&](int64_t u0, int64_t u1, int thread) {
        for (int64_t u = u0; u < u1;) {
          const SeqRows& s = seqs[size_t(u / H)];
          const int64_t h0 = u % H, h1 = std::min(H, h0 + (u1 - u));
          const int64_t r = s.row0;
          engine::attention_backward(cpu_data(dq) + r * qc, cpu_data(dk) + r * kc,
                                     cpu_data(dv) + r * kc, cpu_data(dout) + r * qc,
                                     cpu_data(q) + r * qc, cpu_data(k) + r * kc,
                                     cpu_data(v) + r * kc, kc, s.n, shape.n_head, shape.n_head_kv,
                                     shape.head_dim, h0, h1, scratch.data() + per_thread * thread);
          u += h1 - h0;
        }
      },
      std::max<int64_t>(1, units / (8 * threads)));
}

}  // namespace trit::engine

namespace trit::engine {

// Fewer (sequence, KV head) pairs than threads want: the query rows of every head first (their
// statistics and dq), then the key rows of every KV head (dk, dv), each in blocks of rows
// paired with their mirror block so that every unit has about the same work (a causal row's
// work grows with its position). The scores and softmax weights of the second half are
// recomputed from the first's statistics with the reference's operations: the same bits.
void CpuBackend::attention_backward_split(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                                          const DeviceTensor& dout, const DeviceTensor& q,
                                          const DeviceTensor& k, const DeviceTensor& v,
                                          std::span<const SeqRows> seqs, const AttnShape& shape,
                                          float* scratch, int64_t per_thread, int64_t longest) {
  const int64_t n_head = shape.n_head, H = shape.n_head_kv, hd = shape.head_dim;
  const int64_t group = n_head / H, qc = q.cols(), kc = k.cols();
  const float scale = 1.0f / std::sqrt(float(hd));
  constexpr int64_t kBlock = 8;  // at most kAttnRows: a block's rows share the key tiles
  static_assert(kBlock <= kAttnRows);
  struct Unit {
    size_t seq;
    int64_t head, block;  // rows [block * kBlock, ...) and the mirror block
  };
  auto units_of = [&](int64_t heads) {
    std::vector<Unit> u;
    for (size_t s = 0; s < seqs.size(); ++s) {
      const int64_t blocks = (seqs[s].n + kBlock - 1) / kBlock;
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t b = 0; b < (blocks + 1) / 2; ++b) u.push_back({s, h, b});
      }
    }
    return u;
  };
  // Each unit's block and its mirror (the middle block of an odd count once) on the threads,
  // with the thread's scratch: a key tile, a block's scores (kBlock, longest) and one row's
  // dot products (longest).
  auto each_block = [&](const std::vector<Unit>& units, auto&& fn) {
    pool_.parallel_for_dynamic(
        int64_t(units.size()),
        [&](int64_t u0, int64_t u1, int thread) {
          float* tile = scratch + per_thread * thread;
          float* sc = tile + attention_tile_floats(hd);
          float* dp = sc + kAttnRows * longest;
          for (int64_t i = u0; i < u1; ++i) {
            const Unit& u = units[size_t(i)];
            const int64_t blocks = (seqs[u.seq].n + kBlock - 1) / kBlock;
            for (int64_t b : {u.block, blocks - 1 - u.block}) {
              fn(u, b, tile, sc, dp);
              if (b == blocks - 1 - u.block) break;
            }
          }
        },
        1);
  };
  std::vector<float> stats(size_t(q.rows() * n_head * 3));
  each_block(units_of(n_head), [&](const Unit& u, int64_t b, float* tile, float* sc, float* dp) {
    // The block's rows: their scores from shared key tiles, then each row's statistics and
    // dq += dS_tj k_j over the keys in order.
    const int64_t r = seqs[u.seq].row0, n = seqs[u.seq].n, kvh = u.head / group;
    const float* kh = cpu_data(k) + r * kc + kvh * hd;
    const float* vh = cpu_data(v) + r * kc + kvh * hd;
    const int64_t t0 = b * kBlock, t1 = std::min(n, t0 + kBlock);
    const float* qs[kBlock];
    int64_t n_keys[kBlock];
    for (int64_t t = t0; t < t1; ++t) {
      qs[t - t0] = cpu_data(q) + ((r + t) * n_head + u.head) * hd;
      n_keys[t - t0] = t + 1;
    }
    attention_rows_scores(qs, n_keys, t1 - t0, kh, kc, hd, scale, sc, longest, tile);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t row = (r + t) * n_head + u.head;
      float* p = sc + (t - t0) * longest;
      float* st = stats.data() + row * 3;
      const float big_d =
          softmax_from_scores(p, t + 1, cpu_data(dout) + row * hd, vh, kc, hd, dp, &st[0], &st[1]);
      float* dqh = cpu_data(dq) + row * hd;
      for (int64_t j = 0; j <= t; ++j) {
        const float ds = p[j] * (dp[j] - big_d) * scale;
        axpy_f32(dqh, ds, kh + j * kc, hd);
      }
      st[2] = big_d;
    }
  });
  each_block(units_of(H), [&](const Unit& u, int64_t b, float* tile, float* sc, float* dp) {
    // Key rows [j0, j1) of KV head u.head: dv_j and dk_j get their terms from the group's query
    // heads in order and, for each, the queries t >= j in order (the reference's order), P and
    // dS recomputed from the query side's statistics. The scores s_tj of a head come from tiles
    // of its transposed queries, which the block's keys share.
    const int64_t r = seqs[u.seq].row0, n = seqs[u.seq].n, off = u.head * hd;
    const int64_t j0 = b * kBlock, j1 = std::min(n, j0 + kBlock);
    const float* ks[kBlock];
    int64_t n_queries[kBlock];
    for (int64_t j = j0; j < j1; ++j) {
      ks[j - j0] = cpu_data(k) + (r + j) * kc + off;
      n_queries[j - j0] = n - j0;
    }
    for (int64_t h = u.head * group; h < (u.head + 1) * group; ++h) {
      const float* qh0 = cpu_data(q) + ((r + j0) * n_head + h) * hd;  // query j0 of head h
      attention_rows_scores(ks, n_queries, j1 - j0, qh0, qc, hd, scale, sc, longest, tile);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t kr = (r + j) * kc + off;
        float* dkj = cpu_data(dk) + kr;
        float* dvj = cpu_data(dv) + kr;
        const float* d0 = cpu_data(dout) + ((r + j) * n_head + h) * hd;  // query j's dout
        attention_value_dots(dp, cpu_data(v) + kr, d0, qc, n - j, hd);   // dout_t . v_j
        const float* sj = sc + (j - j0) * longest + (j - j0);            // s_tj from t = j
        for (int64_t t = j; t < n; ++t) {
          const int64_t row = (r + t) * n_head + h;
          const float* st = stats.data() + row * 3;
          float pj = exp_f32(sj[t - j] - st[0]);
          pj *= st[1];
          axpy_f32(dvj, pj, cpu_data(dout) + row * hd, hd);
          const float ds = pj * (dp[t - j] - st[2]) * scale;
          axpy_f32(dkj, ds, cpu_data(q) + row * hd, hd);
        }
      }
    }
  });
}

}  // namespace trit::engine

namespace trit::engine {

// Fewer (sequence, head) pairs than threads want (one training sequence of a model with few
// heads): units of one head and two blocks of query rows, a block and its mirror, so that
// every unit has about the same work. Each row's values are computed as attention_forward
// computes them whatever rows it is given: the same bits.
void CpuBackend::attention_split(DeviceTensor& out, const DeviceTensor& q,
                                 const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                                 std::span<const SeqRows> seqs, const AttnShape& shape,
                                 int64_t scratch_floats) {
  constexpr int64_t kBlock = 8;
  struct Unit {
    size_t seq;
    int64_t head, block;
  };
  std::vector<Unit> units;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int64_t blocks = (seqs[s].n + kBlock - 1) / kBlock;
    for (int64_t h = 0; h < shape.n_head; ++h) {
      for (int64_t b = 0; b < (blocks + 1) / 2; ++b) units.push_back({s, h, b});
    }
  }
  const int64_t qc = q.cols(), oc = out.cols(), kc = k_cache.cols();
  pool_.parallel_for(int64_t(units.size()), [&](int64_t u0, int64_t u1, int thread) {
    float* scores = scores_.data() + thread * scratch_floats;
    for (int64_t i = u0; i < u1; ++i) {
      const Unit& u = units[size_t(i)];
      const SeqRows& s = seqs[u.seq];
      const int64_t blocks = (s.n + kBlock - 1) / kBlock, mirror = blocks - 1 - u.block;
      for (int64_t b : {u.block, mirror}) {
        const int64_t t0 = b * kBlock, t1 = std::min(s.n, t0 + kBlock);
        attention_forward(cpu_data(q) + (s.row0 + t0) * qc, cpu_data(k_cache) + s.base * kc,
                          cpu_data(v_cache) + s.base * kc, kc, t1 - t0, s.pos0 + t0, shape.n_head,
                          shape.n_head_kv, shape.head_dim, u.head, u.head + 1,
                          cpu_data(out) + (s.row0 + t0) * oc, scores);
        if (b == mirror) break;  // the middle block of an odd count, once
      }
    }
  });
}

}  // namespace trit::engine
