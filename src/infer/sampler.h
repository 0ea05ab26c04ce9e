// Choosing the next token from logits: greedy, or temperature sampling, after the logit bias
// and the penalties (repetition, frequency and presence), with top-k, top-p and min-p
// filtering (in that order, as llama.cpp does by default).
#pragma once

#include <cstdint>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

namespace trit::engine {

struct SamplerOptions {
  float temperature = 0.8f;     // <= 0: greedy
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // tokens looked back for the penalties (< 0: all, 0: none)
  // OpenAI's penalties: a token seen c times in the window loses c * frequency_penalty +
  // (c > 0) * presence_penalty from its logit (after the repetition penalty). 0: off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Added to these tokens' logits first (OpenAI's logit_bias; -inf bans a token). Ids outside
  // the vocabulary are the caller's to refuse; the sampler skips them.
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
};

// A sampled token's log-probability under the model (the log-softmax of the raw logits:
// before the bias, the penalties and the temperature, as OpenAI reports them) and the
// likeliest tokens' (falling, ties to the lower id).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};
TokenLogprob token_logprob(const float* logits, int64_t n_vocab, int32_t token, int32_t n_top);

class Sampler {
 public:
  explicit Sampler(SamplerOptions opts);
  // Picks a token from logits (n_vocab), given the tokens so far (for the penalties).
  int32_t sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history);
  const SamplerOptions& options() const { return opts_; }

 private:
  SamplerOptions opts_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::unordered_map<int32_t, int32_t> seen_;  // a window's tokens and their counts
};

}  // namespace trit::engine
