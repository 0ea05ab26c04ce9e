#include "model/lora_apply.h"

#include "core/error.h"
#include "model/hparams.h"

namespace trit {

bool LoraSet::empty() const {
  if (!head.empty()) return false;
  for (const auto& b : blocks) {
    for (const auto& terms : b) {
      if (!terms.empty()) return false;
    }
  }
  return true;
}

LoraSet resolve_lora(const std::vector<std::pair<const LoraAdapter*, float>>& adapters,
                     const HParams& hp) {
  LoraSet set;
  set.blocks.resize(static_cast<size_t>(hp.n_layer));
  const std::vector<std::string>& names = block_linear_names();
  for (const auto& [adapter, user_scale] : adapters) {
    for (const auto& [name, layer] : adapter->layers) {
      int64_t n_in = 0, n_out = 0;
      std::vector<LoraTerm>* slot = nullptr;
      if (name == "output.weight") {
        n_in = hp.n_embd;
        n_out = hp.n_vocab;
        slot = &set.head;
      } else {
        int64_t l = -1;
        for (int64_t i = 0; i < hp.n_layer && !slot; ++i) {
          for (size_t k = 0; k < names.size(); ++k) {
            if (name == block_tensor_name(i, names[k])) {
              l = i;
              slot = &set.blocks[size_t(l)][k];
              std::tie(n_in, n_out) = block_linear_shape(hp, names[k]);
              break;
            }
          }
        }
      }
      if (!slot) fail("adapter layer ", name, " names no linear layer of the model");
      if (layer.n_in != n_in || layer.n_out != n_out) {
        fail("adapter layer ", name, ": shape ", layer.n_in, " -> ", layer.n_out,
             ", the model's layer is ", n_in, " -> ", n_out);
      }
      slot->push_back({&layer, user_scale * adapter->scaling(layer.rank)});
    }
  }
  return set;
}

void lora_add(const std::vector<LoraTerm>& terms, const float* x, int64_t T, int64_t n_in, float* y,
              int64_t n_out, ThreadPool& pool) {
  for (const LoraTerm& term : terms) {
    const LoraLayer& L = *term.layer;
    const int64_t r = L.rank;
    std::vector<float> ax(static_cast<size_t>(T * r));  // (T, r) = x A^T
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * n_in;
      for (int64_t k = 0; k < r; ++k) {
        const float* ak = L.a.data() + k * n_in;
        float acc = 0;
        for (int64_t i = 0; i < n_in; ++i) acc += ak[i] * xt[i];
        ax[size_t(t * r + k)] = acc;
      }
    }
    pool.parallel_for(n_out, [&](int64_t o0, int64_t o1, int) {
      for (int64_t t = 0; t < T; ++t) {
        const float* at = ax.data() + t * r;
        float* yt = y + t * n_out;
        for (int64_t o = o0; o < o1; ++o) {
          const float* bo = L.b.data() + o * r;
          float acc = 0;
          for (int64_t k = 0; k < r; ++k) acc += bo[k] * at[k];
          yt[o] += acc * term.scale;  // PEFT scales B (A x)
        }
      }
    });
  }
}

}  // namespace trit
