#include "train/lora_init.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"

namespace trit::engine {
namespace {

// Uniform in [-bound, bound) from 24 random bits: the same numbers with any standard library.
float uniform_pm(std::mt19937_64& rng, float bound) {
  const float u = float(rng() >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  return (2.0f * u - 1.0f) * bound;
}

}  // namespace

LoraAdapter lora_init(const HParams& hp, const std::string& targets, int64_t rank, float alpha,
                      bool rslora, uint64_t seed) {
  if (rank <= 0) fail("lora_init: rank is ", rank, ", must be positive");
  if (!std::isfinite(alpha)) fail("lora_init: alpha is ", alpha, ", not finite");
  if (hp.n_layer <= 0 || hp.n_embd <= 0 || hp.n_vocab <= 0) {
    fail("lora_init: model shape has no layers (n_layer ", hp.n_layer, ", n_embd ", hp.n_embd,
         ", n_vocab ", hp.n_vocab, ")");
  }
  const std::vector<std::string> suffixes = lora_target_suffixes(targets);
  LoraAdapter out;
  out.alpha = alpha;
  out.rslora = rslora;
  out.base_arch = hp.arch;

  // One stream for the whole adapter, drawn in a fixed order (blocks ascending, targets in
  // lora_target_suffixes order, head last), each A row-major (rank, n_in).
  std::mt19937_64 rng(seed);
  auto make = [&](int64_t n_in, int64_t n_out) {
    LoraLayer l;
    l.n_in = n_in;
    l.n_out = n_out;
    l.rank = rank;
    // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in).
    const float bound = 1.0f / std::sqrt(float(n_in));
    l.a.resize(size_t(rank * n_in));
    for (float& x : l.a) x = uniform_pm(rng, bound);
    l.b.assign(size_t(n_out * rank), 0.0f);
    return l;
  };
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    for (const std::string& s : suffixes) {
      if (s == "output") continue;
      const auto [n_in, n_out] = block_linear_shape(hp, s);
      out.layers[block_tensor_name(i, s)] = make(n_in, n_out);
    }
  }
  if (std::find(suffixes.begin(), suffixes.end(), "output") != suffixes.end()) {
    out.layers["output.weight"] = make(hp.n_embd, hp.n_vocab);
  }
  return out;
}

}  // namespace trit::engine
