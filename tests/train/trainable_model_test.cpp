// The training forward/backward pass: its loss equals cross-entropy over the inference
// logits, its LoRA gradients match finite differences (float activations, where the model is
// smooth), and gradient checkpointing and thread counts do not change them; for both block
// families (BitNet with sub-norms, ternary Llama without) and for widths that are not a multiple
// of 256 (their rows stored padded).
#include "train/trainable_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/select.h"
#include "model/lora_set.h"
#include "support/files.h"
#include "support/models.h"
#include "support/vulkan.h"
#include "train/lora_init.h"

namespace trit::engine {
namespace {

class TrainModel : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    CreateOptions o = test::tiny_options(21);
    o.hp.tied_head = false;
    const std::string family = GetParam();
    if (family == "llama") {
      o.hp.arch = "llama";
      o.hp.act = Activation::Silu;
    } else if (family == "odd_widths") {  // rows stored padded (TernaryMatrix::row_in)
      o.hp.n_embd = 320, o.hp.n_ff = 864, o.hp.rope_dim = 80;
    }
    model_ = Model::load(test::create_model(dir_, "m.gguf", o));
    adapter_ = lora_init(model_->hparams(), "all,head", 4, 8.0f, false, 5);
    // Non-zero B so that A gets gradients too.
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    for (auto& [name, L] : adapter_.layers) {
      for (float& v : L.b) v = nd(rng);
    }
    tokens_ = {256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33};
    for (size_t t = 0; t < tokens_.size(); ++t) {
      targets_.push_back(t + 1 < tokens_.size() ? tokens_[t + 1] : 0);
      mask_.push_back(t + 1 < tokens_.size() && t != 3 ? 1.0f : 0.0f);
    }
    norm_ = 0;
    for (float m : mask_) norm_ += m;
  }

  // Mean masked NLL from the inference path's logits.
  double inference_loss(bool act_quant) {
    const std::vector<float> logits = test::session_logits(
        *model_, tokens_, {.act_quant = act_quant, .lora = {{&adapter_, 1.0f}}, .n_ctx = 32});
    const int64_t V = model_->hparams().n_vocab;
    double loss = 0;
    for (size_t t = 0; t < tokens_.size(); ++t) {
      if (mask_[t] == 0) continue;
      const float* row = logits.data() + t * size_t(V);
      double m = row[0], z = 0;
      for (int64_t i = 0; i < V; ++i) m = std::max(m, double(row[i]));
      for (int64_t i = 0; i < V; ++i) z += std::exp(double(row[i]) - m);
      loss += m + std::log(z) - row[targets_[t]];
    }
    return loss / norm_;
  }

  double loss(TrainableModel& tm) {
    return tm.forward_loss(tokens_.data(), targets_.data(), mask_.data(), int64_t(tokens_.size()),
                           norm_);
  }

  test::TempDir dir_;
  std::unique_ptr<Model> model_;
  LoraAdapter adapter_;
  std::vector<int32_t> tokens_, targets_;
  std::vector<float> mask_;
  float norm_ = 0;
};

TEST_P(TrainModel, LossEqualsCrossEntropyOfInferenceLogits) {
  ThreadPool pool(2);
  for (bool act_quant : {true, false}) {
    TrainPassOptions o;
    o.act_quant = act_quant;
    TrainableModel tm(*model_, adapter_, pool, o);
    const double expected = inference_loss(act_quant);
    EXPECT_NEAR(loss(tm), expected, 1e-5 * expected) << "act_quant " << act_quant;
  }
}

TEST_P(TrainModel, GradientsMatchFiniteDifferences) {
  ThreadPool pool(2);
  TrainPassOptions o;
  o.act_quant = false;  // smooth in the parameters
  TrainableModel tm(*model_, adapter_, pool, o);
  tm.zero_grads();
  const double l0 = tm.forward_backward(tokens_.data(), targets_.data(), mask_.data(),
                                        int64_t(tokens_.size()), norm_, 0);
  EXPECT_NEAR(l0, loss(tm), 1e-6 * l0);
  // Float evaluation noise swamps single-coordinate differences, so each tensor is moved
  // along a direction: its own gradient (the derivative must be |g|) and a random one
  // (the derivative must be g . v).
  std::mt19937 rng(11);
  std::normal_distribution<double> nd(0.0, 1.0);
  int checked = 0;
  for (const std::string& name :
       {std::string("blk.0.attn_q.weight"), std::string("blk.0.attn_k.weight"),
        std::string("blk.0.attn_v.weight"), std::string("blk.1.attn_output.weight"),
        std::string("blk.0.ffn_gate.weight"), std::string("blk.1.ffn_up.weight"),
        std::string("blk.0.ffn_down.weight"), std::string("output.weight")}) {
    LoraLayer& L = adapter_.layers.at(name);
    const LoraGrad& g = tm.grads().at(name);
    for (int which = 0; which < 2; ++which) {
      std::vector<float>& p = which ? L.b : L.a;
      const std::vector<float>& grad = which ? g.db : g.da;
      double gnorm = 0;
      for (float v : grad) gnorm += double(v) * v;
      gnorm = std::sqrt(gnorm);
      ASSERT_GT(gnorm, 0) << name;
      for (int dir = 0; dir < 2; ++dir) {
        std::vector<double> v(grad.size());
        double vnorm = 0;
        for (size_t i = 0; i < v.size(); ++i) {
          v[i] = dir == 0 ? double(grad[i]) : nd(rng);
          vnorm += v[i] * v[i];
        }
        vnorm = std::sqrt(vnorm);
        double expected = 0;
        for (size_t i = 0; i < v.size(); ++i) {
          v[i] /= vnorm;
          expected += v[i] * grad[i];
        }
        const std::vector<float> keep = p;
        const double h = 1e-2 / gnorm;  // moves the loss by about 0.01
        auto at = [&](double step) {
          for (size_t i = 0; i < p.size(); ++i) p[i] = float(double(keep[i]) + step * v[i]);
          tm.upload_adapter();
          const double val = loss(tm);
          p = keep;
          tm.upload_adapter();
          return val;
        };
        const double fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12.0 * h);
        EXPECT_NEAR(fd, expected, 1e-2 * gnorm) << name << (which ? " B" : " A") << " dir " << dir;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 32);
}

TEST_P(TrainModel, CheckpointingThreadsAndDropoutKeysAreConsistent) {
  auto grads_of = [&](bool ckpt, int threads, float dropout, uint64_t key) {
    ThreadPool pool(threads);
    TrainPassOptions o;
    o.checkpointing = ckpt;
    o.dropout = dropout;
    o.head_chunk = 5;
    TrainableModel tm(*model_, adapter_, pool, o);
    tm.zero_grads();
    tm.forward_backward(tokens_.data(), targets_.data(), mask_.data(), int64_t(tokens_.size()),
                        norm_, key);
    std::vector<float> all;
    for (const auto& [name, g] : tm.grads()) {
      all.insert(all.end(), g.da.begin(), g.da.end());
      all.insert(all.end(), g.db.begin(), g.db.end());
    }
    return all;
  };
  const auto base = grads_of(true, 2, 0.0f, 1);
  EXPECT_EQ(base, grads_of(false, 2, 0.0f, 1));
  EXPECT_EQ(base, grads_of(true, 2, 0.0f, 99));  // the key only matters with dropout
  const auto drop = grads_of(true, 2, 0.3f, 7);
  EXPECT_EQ(drop, grads_of(false, 2, 0.3f, 7));
  EXPECT_NE(drop, base);
  EXPECT_NE(drop, grads_of(true, 2, 0.3f, 8));
  // Every thread count gives the same bits (each sum runs in one order whatever the split).
  for (int threads : {1, 3, 16}) {
    EXPECT_EQ(base, grads_of(true, threads, 0.0f, 1)) << threads << " threads";
  }
  EXPECT_EQ(drop, grads_of(true, 3, 0.3f, 7)) << "3 threads, dropout";
}

// Sequences packed in the rows of one pass (TrainBatch) give the loss and gradients of the
// same sequences computed one by one, on the CPU and on Vulkan (whole tensors, and tiled at a
// small binding limit so that sequences start inside pieces and off the attention chunks).
TEST_P(TrainModel, PackedSequencesEqualTheSequencesOneByOne) {
  // Three sequences of 13, 1 and 9 tokens, the last two cut from the first with other masks.
  std::vector<int64_t> lengths = {13, 1, 9};
  std::vector<int32_t> tokens, targets;
  std::vector<float> mask;
  for (int64_t n : lengths) {
    for (int64_t t = 0; t < n; ++t) {
      tokens.push_back(tokens_[size_t((t + n) % 13)]);
      targets.push_back(tokens_[size_t((t + n + 1) % 13)]);
      mask.push_back((t + n) % 4 == 1 ? 0.0f : 1.0f);
    }
  }
  float norm = 0;
  for (float m : mask) norm += m;
  const int64_t total = int64_t(tokens.size());
  auto run = [&](Backend& be, bool packed, double& loss) {
    TrainPassOptions o;
    o.head_chunk = 4;
    TrainableModel tm(*model_, adapter_, be, o);
    tm.zero_grads();
    loss = 0;
    if (packed) {
      loss =
          tm.forward_backward(tokens.data(), targets.data(), mask.data(), total, norm, 3, lengths);
    } else {
      for (size_t i = 0, off = 0; i < lengths.size(); off += size_t(lengths[i]), ++i) {
        loss += tm.forward_backward(tokens.data() + off, targets.data() + off, mask.data() + off,
                                    lengths[i], norm, 3);
      }
    }
    std::vector<float> all;
    for (const auto& [name, g] : tm.grads()) {
      all.insert(all.end(), g.da.begin(), g.da.end());
      all.insert(all.end(), g.db.begin(), g.db.end());
    }
    return all;
  };
  auto compare = [&](Backend& be, const std::string& where) {
    double l1 = 0, l2 = 0;
    const std::vector<float> one = run(be, false, l1), packed = run(be, true, l2);
    EXPECT_NEAR(l2, l1, 1e-6 * l1) << where;
    ASSERT_EQ(one.size(), packed.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < one.size(); ++i) {
      num += (double(one[i]) - packed[i]) * (double(one[i]) - packed[i]);
      den += double(one[i]) * one[i];
    }
    ASSERT_GT(den, 0) << where;
    EXPECT_LT(std::sqrt(num / den), 1e-5) << where;
  };
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(pool);
  compare(*cpu, "cpu");
  for (uint64_t limit : {uint64_t(0), uint64_t(16) << 10}) {
    std::unique_ptr<Backend> vk;
    test::open_vulkan(limit, &vk);
    if (!vk) return;
    compare(*vk, cat("vulkan, binding limit ", limit));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, TrainModel, ::testing::Values("bitnet", "llama", "odd_widths"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace trit::engine
