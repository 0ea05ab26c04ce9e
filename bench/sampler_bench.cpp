// Times one sampled token of a 128,256-token vocabulary (BitNet b1.58 2B4T's) at temperature
// 0.8 and min-p 0.05, with top-k off or 40 and top-p 1 or 0.95: the host's share of a server
// step for each sampled row.
//
//   sampler_bench [REPEATS]   (default 200)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

#include "infer/sampler.h"

int main(int argc, char** argv) {
  using trit::engine::Sampler;
  using trit::engine::SamplerOptions;
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 200;
  const int vocab = 128256;
  std::vector<float> logits(static_cast<size_t>(vocab));
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& l : logits) l = normal(gen);
  for (const auto& [top_k, top_p] : {std::pair{0, 1.0f}, {0, 0.95f}, {40, 0.95f}}) {
    SamplerOptions o;
    o.temperature = 0.8f;
    o.top_k = top_k;
    o.top_p = top_p;
    o.min_p = 0.05f;
    o.seed = 5;
    Sampler s(o);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) s.sample(logits.data(), vocab, {});
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("vocab %d, top_k %d, top_p %.2f, min_p 0.05: %.3f ms a token\n", vocab, top_k,
                double(top_p), ms / repeats);
  }
}
