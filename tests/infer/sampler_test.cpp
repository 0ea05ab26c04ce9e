#include "infer/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <utility>

namespace trit::engine {
namespace {

// Sampling options: temperature, top-k, top-p, min-p and seed (the rest at their defaults).
SamplerOptions sampling(float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed) {
  SamplerOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.min_p = min_p;
  o.seed = seed;
  return o;
}

TEST(Sampler, GreedyPicksTheLargestLogitAndTheFirstOnTies) {
  SamplerOptions o;
  o.temperature = 0;
  Sampler s(o);
  const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.sample(logits.data(), 5, {}), 1);
}

TEST(Sampler, TopKOfOneIsGreedyAtAnyTemperature) {
  SamplerOptions o;
  o.temperature = 5;
  o.top_k = 1;
  o.min_p = 0;
  Sampler s(o);
  const std::vector<float> logits = {0.5f, 0.1f, 0.7f, 0.2f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits.data(), 4, {}), 2);
}

TEST(Sampler, SameSeedSameSequence) {
  SamplerOptions o = sampling(1, 0, 1, 0, 99);
  const std::vector<float> logits = {1, 1, 1, 1, 1, 1, 1, 1};
  Sampler a(o), b(o);
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 64; ++i) {
    sa.push_back(a.sample(logits.data(), 8, {}));
    sb.push_back(b.sample(logits.data(), 8, {}));
  }
  EXPECT_EQ(sa, sb);
  o.seed = 100;
  Sampler c(o);
  std::vector<int32_t> sc;
  for (int i = 0; i < 64; ++i) sc.push_back(c.sample(logits.data(), 8, {}));
  EXPECT_NE(sa, sc);
}

TEST(Sampler, FrequenciesFollowSoftmaxAtTemperature) {
  SamplerOptions o = sampling(0.5f, 0, 1, 0, 1);
  Sampler s(o);
  const std::vector<float> logits = {0.0f, std::log(2.0f) / 2};  // at T=0.5: p = 1/3, 2/3
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.sample(logits.data(), 2, {}) == 1;
  EXPECT_NEAR(double(ones) / n, 2.0 / 3.0, 0.015);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplerOptions o = sampling(1, 0, 0.75f, 0, 3);
  Sampler s(o);
  // p = 0.5, 0.3, 0.2 (ln weights): the nucleus of 0.75 is {0, 1}.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  std::map<int32_t, int> seen;
  for (int i = 0; i < 3000; ++i) ++seen[s.sample(logits.data(), 3, {})];
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
}

// A nucleus longer than the first candidates sorted (256): 600 equally likely tokens among
// 4096, top-p 0.499 keeps the first 300 of them (299 reach 0.4983; ties go to the lower id), no
// more, no fewer.
TEST(Sampler, TopPNucleusBeyondTheFirstSortedCandidates) {
  SamplerOptions o = sampling(1, 0, 0.499f, 0, 7);
  Sampler s(o);
  std::vector<float> logits(4096, -100.0f);
  for (int i = 0; i < 600; ++i) logits[size_t(i) * 5 + 3] = 2.0f;  // ids 3, 8, ..., 2998
  std::map<int32_t, int> seen;
  for (int i = 0; i < 6000; ++i) ++seen[s.sample(logits.data(), 4096, {})];
  for (const auto& [id, count] : seen) {
    EXPECT_EQ(id % 5, 3) << id;
    EXPECT_LT(id, 300 * 5) << id;  // the first 300 of the 600
  }
  EXPECT_EQ(seen.size(), 300u);  // each of them, about 20 times
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplerOptions o = sampling(1, 0, 1, 0.3f, 4);
  Sampler s(o);
  // p relative to the best: 1, 0.5, 0.25: min-p 0.3 drops the last.
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), std::log(1.0f)};
  for (int i = 0; i < 2000; ++i) EXPECT_NE(s.sample(logits.data(), 3, {}), 2);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplerOptions o;
  o.temperature = 0;
  o.repeat_penalty = 2.0f;
  Sampler s(o);
  // Token 0 (logit 3) was seen: 3 / 2 = 1.5 < 2, so token 1 wins.
  std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(logits.data(), 3, {0}), 1);
  // Negative logits get more negative: -0.5 * 2 = -1 < -0.9.
  logits = {-0.5f, -0.9f, -3.0f};
  EXPECT_EQ(s.sample(logits.data(), 3, {0}), 1);
  // Outside the look-back window the penalty does not apply.
  o.repeat_last_n = 1;
  Sampler w(o);
  logits = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(w.sample(logits.data(), 3, {0, 2}), 0);
}

// OpenAI's penalties: a token seen c times in the window loses c * frequency + presence, after
// the repetition penalty (llama.cpp's order).
TEST(Sampler, FrequencyAndPresencePenaltiesSubtractPerOccurrence) {
  auto greedy = [](float frequency, float presence, int32_t last_n, float repeat,
                   const std::vector<float>& logits, const std::vector<int32_t>& history) {
    SamplerOptions o;
    o.temperature = 0;
    o.frequency_penalty = frequency;
    o.presence_penalty = presence;
    o.repeat_last_n = last_n;
    o.repeat_penalty = repeat;
    Sampler s(o);
    return s.sample(logits.data(), int64_t(logits.size()), history);
  };
  const std::vector<float> logits = {3.0f, 2.6f, 2.0f};
  const std::vector<int32_t> seen = {0, 0, 1};  // token 0 twice, token 1 once
  EXPECT_EQ(greedy(0, 0, 64, 1, logits, seen), 0);
  // 3 - 2 * 0.5 = 2.0, 2.6 - 0.5 = 2.1, 2.0: token 1.
  EXPECT_EQ(greedy(0.5f, 0, 64, 1, logits, seen), 1);
  // And 0.2 more from each seen token: 1.8, 1.9, 2.0: token 2.
  EXPECT_EQ(greedy(0.5f, 0.2f, 64, 1, logits, seen), 2);
  // Presence alone counts a token once: 3 - 0.7 = 2.3, 1.9, 2.0: token 0.
  EXPECT_EQ(greedy(0, 0.7f, 64, 1, logits, seen), 0);
  // Negative values favour what was seen: 2.6 + 1.5 = 4.1 against 3: token 1.
  EXPECT_EQ(greedy(0, -1.5f, 64, 1, logits, {1}), 1);
  // Only the window counts: the last token (1) alone loses 0.7: 3.0 stays best.
  EXPECT_EQ(greedy(0.5f, 0.2f, 1, 1, logits, seen), 0);
  // The whole history at -1, none at 0.
  EXPECT_EQ(greedy(0.5f, 0.2f, -1, 1, logits, seen), 2);
  EXPECT_EQ(greedy(0.5f, 0.2f, 0, 1, logits, seen), 0);
  // Repetition first, then the subtraction: 3 / 2 - 0.6 = 0.9 < 1 (the other order gives 1.2).
  EXPECT_EQ(greedy(0, 0.6f, 64, 2, {3.0f, 1.0f}, {0}), 1);
}

TEST(Sampler, LogitBiasAddsToLogitsAndMinusInfinityBans) {
  const float inf = std::numeric_limits<float>::infinity();
  auto greedy = [](std::vector<std::pair<int32_t, float>> bias, const std::vector<float>& logits) {
    SamplerOptions o;
    o.temperature = 0;
    o.logit_bias = std::move(bias);
    Sampler s(o);
    return s.sample(logits.data(), int64_t(logits.size()), {});
  };
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  EXPECT_EQ(greedy({{0, -1.5f}}, logits), 1);               // 1.5 < 2
  EXPECT_EQ(greedy({{0, -0.5f}}, logits), 0);               // 2.5 > 2
  EXPECT_EQ(greedy({{2, 2.5f}}, logits), 2);                // 3.5
  EXPECT_EQ(greedy({{0, -inf}, {1, -inf}}, logits), 2);     // banned
  EXPECT_EQ(greedy({{7, 10.0f}, {-1, 10.0f}}, logits), 0);  // ids outside: skipped
  // The bias comes before the repetition penalty (llama.cpp's order): token 0, seen, biased by
  // 2 and penalised by 2 is (3 + 2) / 2 = 2.5 < token 1's 2 + 0.6 (the other order: 3.5).
  SamplerOptions o;
  o.temperature = 0;
  o.repeat_penalty = 2.0f;
  o.logit_bias = {{0, 2.0f}, {1, 0.6f}};
  Sampler s(o);
  EXPECT_EQ(s.sample(logits.data(), 3, {0}), 1);
  // Sampling never draws a banned token; with every token banned the best is still returned.
  SamplerOptions t = sampling(1, 0, 1, 0, 9);
  t.logit_bias = {{0, -inf}};
  Sampler ts(t);
  for (int i = 0; i < 500; ++i) EXPECT_NE(ts.sample(logits.data(), 3, {}), 0);
  t.logit_bias = {{0, -inf}, {1, -inf}, {2, -inf}};
  Sampler all(t);
  const int32_t any = all.sample(logits.data(), 3, {});
  EXPECT_TRUE(any >= 0 && any < 3);
}

TEST(Sampler, PresencePenaltyKeepsSampledTokensAway) {
  SamplerOptions o = sampling(1, 0, 1, 0, 5);
  o.presence_penalty = 2.0f;  // the largest OpenAI allows
  Sampler s(o);
  // Token 0 (logit 10, seen) falls to 8, below token 1's 9.5 by 1.5: about 18% of draws. Seen
  // again (history of two), it falls by the same 2 only (presence counts once).
  const std::vector<float> logits = {10.0f, 9.5f, -20.0f};
  int zeros = 0;
  for (int i = 0; i < 4000; ++i) zeros += s.sample(logits.data(), 3, {0, 0}) == 0;
  const double p = 1.0 / (1.0 + std::exp(1.5));
  EXPECT_NEAR(zeros / 4000.0, p, 0.03);
}

}  // namespace
}  // namespace trit::engine
