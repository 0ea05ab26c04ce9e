// Times one sampled token of a 128,256-token vocabulary (BitNet b1.58 2B4T's) at temperature
// 0.8 and min-p 0.05, with top-k off or 40 and top-p 1 or 0.95; then greedy with the
// frequency and presence penalties over 64 tokens of history, and a token's logprobs (none, 5
// or 20 of the likeliest beside it): the host's share of a server step for each row.
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
  auto time_ms = [&](auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) f(i);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
               .count() /
           repeats;
  };
  SamplerOptions plain;
  plain.temperature = 0;
  Sampler greedy(plain);
  std::printf("vocab %d, greedy: %.3f ms a token\n", vocab,
              time_ms([&](int) { greedy.sample(logits.data(), vocab, {}); }));
  SamplerOptions pen;
  pen.temperature = 0;
  pen.frequency_penalty = 0.5f;
  pen.presence_penalty = 0.25f;
  Sampler penalised(pen);
  std::vector<int32_t> history(64);
  for (size_t i = 0; i < history.size(); ++i) history[i] = int32_t(i * 2003 % vocab);
  std::printf(
      "vocab %d, greedy, frequency and presence penalties over 64 tokens: %.3f ms a token\n", vocab,
      time_ms([&](int) { penalised.sample(logits.data(), vocab, history); }));
  for (int top : {0, 5, 20}) {
    float sink = 0;
    const double ms = time_ms(
        [&](int i) { sink += trit::engine::token_logprob(logits.data(), vocab, i, top).logprob; });
    std::printf("vocab %d, logprob with %d of the likeliest: %.3f ms a token (%g)\n", vocab, top,
                ms, double(sink));
  }
}
