// attention_rows.h and attention_forward against scalar loops written here: every score a dot
// product summed over d in order with its products rounded, every output dimension a sum over
// the keys in order. Equal bits at every instruction-set level.
#include "backend/cpu/attention_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/exp_lanes.h"
#include "backend/cpu/ops.h"
#include "support/numeric.h"

namespace trit::engine {
namespace {

using FVec = std::vector<float>;

float score_ref(const float* q, const float* k, int64_t head_dim, float scale) {
  float dot = 0;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float p = q[d] * k[d];  // rounded on its own (no fused multiply-add)
    dot += p;
  }
  return dot * scale;
}

const CpuLevel kLevels[] = {CpuLevel::Scalar, CpuLevel::Avx2, CpuLevel::Avx512Vnni};

TEST(AttentionRows, ScoresEqualTheScalarDotProducts) {
  for (CpuLevel level : kLevels) {
    if (detect_cpu_level() < level) continue;
    for (int64_t head_dim : {8, 24, 64, 80, 128}) {
      const int64_t stride = 3 * head_dim + 5, most = 53;
      const FVec k = test::randn(most * stride, 1, 2.0f);
      const FVec q = test::randn(kAttnRows * head_dim, 2);
      // Rows with key counts across tile edges, one row with fewer keys than the others.
      for (int64_t n_rows = 1; n_rows <= kAttnRows; ++n_rows) {
        const float* qs[kAttnRows];
        int64_t n_keys[kAttnRows];
        for (int64_t i = 0; i < n_rows; ++i) {
          qs[i] = q.data() + i * head_dim;
          n_keys[i] = i == 1 ? 7 : most - 3 * i;
        }
        const int64_t ld = most + 2;
        const float sentinel = -12345.0f;
        FVec s(size_t(n_rows * ld), sentinel), tile(size_t(attention_tile_floats(head_dim)));
        const float scale = 1.0f / std::sqrt(float(head_dim));
        attention_rows_scores(qs, n_keys, n_rows, k.data() + head_dim, stride, head_dim, scale,
                              s.data(), ld, tile.data(), level);
        const std::string what = std::string(cpu_level_name(level)) + " head_dim " +
                                 std::to_string(head_dim) + " rows " + std::to_string(n_rows);
        for (int64_t i = 0; i < n_rows; ++i) {
          for (int64_t j = 0; j < ld; ++j) {
            const float got = s[size_t(i * ld + j)];
            if (j >= n_keys[i]) {
              ASSERT_EQ(got, sentinel) << what << ": row " << i << " wrote key " << j;
              continue;
            }
            const float want = score_ref(qs[i], k.data() + head_dim + j * stride, head_dim, scale);
            ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
                << what << ": row " << i << " key " << j;
          }
        }
      }
    }
  }
}

TEST(AttentionRows, WeightedValuesSumKeysInOrder) {
  for (CpuLevel level : kLevels) {
    if (detect_cpu_level() < level) continue;
    for (int64_t head_dim : {8, 24, 64, 80, 128, 200}) {
      const int64_t stride = 2 * head_dim + 3;
      for (int64_t n : {1, 5, 16, 37}) {
        // Rows that share their keys (1 to 7 of them: runs of four, two and one), each with
        // its own weights and scale; every row one longer than head_dim to catch overruns.
        for (int64_t rows : {1, 3, 4, 7}) {
          const FVec v = test::randn(n * stride, 3);
          const FVec p = test::randn(rows * n, 4);
          FVec inv(static_cast<size_t>(rows));
          for (int64_t i = 0; i < rows; ++i) inv[size_t(i)] = 0.37f + 0.1f * float(i);
          FVec out(size_t(rows * (head_dim + 1)), 99.0f);
          std::vector<float*> outs;
          for (int64_t i = 0; i < rows; ++i) outs.push_back(out.data() + i * (head_dim + 1));
          attention_weighted_values(outs.data(), p.data(), n, inv.data(), rows, v.data(), stride, n,
                                    head_dim, level);
          for (int64_t i = 0; i < rows; ++i) {
            for (int64_t d = 0; d < head_dim; ++d) {
              float want = 0;
              for (int64_t j = 0; j < n; ++j) {
                const float pj = p[size_t(i * n + j)] * inv[size_t(i)];
                const float term = pj * v[size_t(j * stride + d)];
                want += term;
              }
              ASSERT_EQ(std::bit_cast<uint32_t>(outs[size_t(i)][d]), std::bit_cast<uint32_t>(want))
                  << cpu_level_name(level) << " head_dim " << head_dim << " keys " << n << " rows "
                  << rows << " row " << i << " d " << d;
            }
            EXPECT_EQ(outs[size_t(i)][head_dim], 99.0f) << "written past row " << i;
          }
        }
      }
    }
  }
}

// attention_value_dots' order: 16 lanes, the tail into the first lanes, then pairwise.
float dot16_ref(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    for (int j = 0; j < 16; ++j) {
      const float p = a[k + j] * b[k + j];
      acc[j] += p;
    }
  }
  for (int j = 0; k < n; ++k, ++j) {
    const float p = a[k] * b[k];
    acc[j] += p;
  }
  for (int w = 8; w > 0; w /= 2) {
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  }
  return acc[0];
}

TEST(AttentionRows, BackwardRowEqualsTheScalarLoops) {
  for (CpuLevel level : kLevels) {
    if (detect_cpu_level() < level) continue;
    for (int64_t head_dim : {8, 24, 64, 80, 128}) {
      const int64_t stride = 2 * head_dim + 3, n = 21;
      const FVec v = test::randn(n * stride, 20), k = test::randn(n * stride, 21);
      const FVec q = test::randn(head_dim, 22), dout = test::randn(head_dim, 23);
      const FVec p0 = test::randn(n, 24), dq0 = test::randn(head_dim, 25);
      const FVec dk0 = test::randn(n * stride, 26), dv0 = test::randn(n * stride, 27);
      const std::string what =
          std::string(cpu_level_name(level)) + " head_dim " + std::to_string(head_dim);

      FVec dp(static_cast<size_t>(n));
      attention_value_dots(dp.data(), dout.data(), v.data(), stride, n, head_dim, level);
      for (int64_t j = 0; j < n; ++j) {
        ASSERT_EQ(std::bit_cast<uint32_t>(dp[size_t(j)]),
                  std::bit_cast<uint32_t>(dot16_ref(dout.data(), v.data() + j * stride, head_dim)))
            << what << " key " << j;
      }

      const float big_d = 0.3f, scale = 0.125f;
      FVec p = p0, dq = dq0, dk = dk0, dv = dv0;
      attention_backward_row(p.data(), dp.data(), big_d, scale, n, q.data(), dout.data(), dq.data(),
                             k.data(), dk.data(), dv.data(), stride, head_dim, level);
      FVec pr = p0, dqr = dq0, dkr = dk0, dvr = dv0;
      const auto axpy = [](float* y, float a, const float* x, int64_t m) {
        for (int64_t i = 0; i < m; ++i) {
          const float t = a * x[i];
          y[i] += t;
        }
      };
      for (int64_t j = 0; j < n; ++j) {
        axpy(dvr.data() + j * stride, pr[size_t(j)], dout.data(), head_dim);
        pr[size_t(j)] = pr[size_t(j)] * (dp[size_t(j)] - big_d) * scale;
      }
      for (int64_t j = 0; j < n; ++j) {
        axpy(dqr.data(), pr[size_t(j)], k.data() + j * stride, head_dim);
        axpy(dkr.data() + j * stride, pr[size_t(j)], q.data(), head_dim);
      }
      for (const auto& [got, want, name] :
           {std::tuple{&p, &pr, "dS"}, std::tuple{&dq, &dqr, "dq"}, std::tuple{&dk, &dkr, "dk"},
            std::tuple{&dv, &dvr, "dv"}}) {
        for (size_t i = 0; i < got->size(); ++i) {
          ASSERT_EQ(std::bit_cast<uint32_t>((*got)[i]), std::bit_cast<uint32_t>((*want)[i]))
              << what << " " << name << " at " << i;
        }
      }
    }
  }
}

// The forward pass as the scalar reference computes it (one query row, one head at a time).
FVec attention_ref(const FVec& q, const FVec& k, const FVec& v, int64_t kv_stride, int64_t T,
                   int64_t pos0, int64_t H, int64_t Hkv, int64_t hd, int64_t h0, int64_t h1,
                   const FVec& out0) {
  FVec out = out0;
  const int64_t group = H / Hkv;
  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = pos0 + t + 1;
    for (int64_t h = h0; h < h1; ++h) {
      const float* qh = q.data() + (t * H + h) * hd;
      const int64_t kvh = h / group;
      FVec s(static_cast<size_t>(n));
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        s[size_t(j)] = score_ref(qh, k.data() + j * kv_stride + kvh * hd, hd, scale);
        m = std::max(m, s[size_t(j)]);
      }
      float chain[4] = {0, 0, 0, 0};  // e_j into chain j % 4, in order
      for (int64_t j = 0; j < n; ++j) {
        s[size_t(j)] = exp_f32(s[size_t(j)] - m);  // the softmaxes' exp (exp_lanes_test)
        chain[j % 4] += s[size_t(j)];
      }
      const float inv = 1.0f / ((chain[0] + chain[1]) + (chain[2] + chain[3]));
      float* oh = out.data() + (t * H + h) * hd;
      for (int64_t d = 0; d < hd; ++d) oh[d] = 0;
      for (int64_t j = 0; j < n; ++j) {
        const float p = s[size_t(j)] * inv;
        for (int64_t d = 0; d < hd; ++d) {
          const float term = p * v[size_t(j * kv_stride + kvh * hd + d)];
          oh[d] += term;
        }
      }
    }
  }
  return out;
}

TEST(AttentionRows, ForwardEqualsTheScalarReference) {
  struct Case {
    int64_t T, pos0, H, Hkv, hd, h0, h1;
  };
  // GQA groups of 4 and 3, one KV head for all (a group larger than the rows a tile serves),
  // a prompt after a cache, decoding one token, and a head range cutting a group.
  for (const Case c :
       {Case{19, 0, 8, 2, 64, 0, 8}, Case{5, 30, 6, 2, 24, 0, 6}, Case{1, 70, 12, 1, 32, 0, 12},
        Case{1, 16, 8, 2, 128, 0, 8}, Case{9, 4, 8, 2, 16, 3, 7}}) {
    const int64_t kv_stride = c.Hkv * c.hd + 2, n_keys = c.pos0 + c.T;
    const FVec q = test::randn(c.T * c.H * c.hd, 10, 1.5f);
    const FVec k = test::randn(n_keys * kv_stride, 11, 1.5f);
    const FVec v = test::randn(n_keys * kv_stride, 12);
    const FVec out0(q.size(), 7.0f);  // heads outside [h0, h1) stay as they were
    FVec out = out0, scratch(size_t(attention_forward_scratch(n_keys, c.hd)));
    attention_forward(q.data(), k.data(), v.data(), kv_stride, c.T, c.pos0, c.H, c.Hkv, c.hd, c.h0,
                      c.h1, out.data(), scratch.data());
    const FVec want =
        attention_ref(q, k, v, kv_stride, c.T, c.pos0, c.H, c.Hkv, c.hd, c.h0, c.h1, out0);
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(want[i]))
          << "T " << c.T << " pos0 " << c.pos0 << " H " << c.H << "/" << c.Hkv << " hd " << c.hd
          << " at " << i;
    }
  }
}

}  // namespace
}  // namespace trit::engine
