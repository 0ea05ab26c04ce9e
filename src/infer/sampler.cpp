#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace trit::engine {

TokenLogprob token_logprob(const float* logits, int64_t n_vocab, int32_t token, int32_t n_top) {
  double max_l = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n_vocab; ++i) max_l = std::max(max_l, double(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i]) - max_l);
  const double log_z = max_l + std::log(sum);
  TokenLogprob r;
  r.token = token;
  r.logprob = float(double(logits[token]) - log_z);
  const int64_t k = std::min<int64_t>(std::max(n_top, 0), n_vocab);
  if (k > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
    for (int64_t i = 0; i < n_vocab; ++i) ids[size_t(i)] = int32_t(i);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < k; ++i) {
      r.top.emplace_back(ids[size_t(i)], float(double(logits[ids[size_t(i)]]) - log_z));
    }
  }
  return r;
}

Sampler::Sampler(SamplerOptions opts) : opts_(opts), rng_(opts.seed) {}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history) {
  const bool penalty = (opts_.repeat_penalty != 1.0f || opts_.frequency_penalty != 0.0f ||
                        opts_.presence_penalty != 0.0f) &&
                       opts_.repeat_last_n != 0;
  if (opts_.temperature <= 0 && !penalty && opts_.logit_bias.empty()) {
    // Greedy: the first of the largest logits, read in place (a batch of 16 rows over a vocabulary
    // of 128k spent milliseconds a step copying candidates).
    int64_t best = 0;
    for (int64_t i = 1; i < n_vocab; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return int32_t(best);
  }
  cand_.resize(static_cast<size_t>(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {logits[i], int32_t(i)};
  for (const auto& [id, bias] : opts_.logit_bias) {
    if (id >= 0 && id < n_vocab) cand_[size_t(id)].first += bias;
  }

  if (penalty) {
    const size_t look = opts_.repeat_last_n < 0
                            ? history.size()
                            : std::min(history.size(), size_t(opts_.repeat_last_n));
    seen_.clear();
    for (auto it = history.end() - std::ptrdiff_t(look); it != history.end(); ++it) ++seen_[*it];
    for (const auto& [id, count] : seen_) {
      if (id < 0 || id >= n_vocab) continue;
      float& l = cand_[size_t(id)].first;
      if (opts_.repeat_penalty != 1.0f) {
        l = l > 0 ? l / opts_.repeat_penalty : l * opts_.repeat_penalty;
      }
      l -= float(count) * opts_.frequency_penalty + opts_.presence_penalty;
    }
  }

  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (opts_.temperature <= 0) {
    return std::min_element(cand_.begin(), cand_.end(), by_logit)->second;
  }

  // Probabilities at temperature 1 for the p-filters, as llama.cpp applies them. top-p and
  // min-p each keep a prefix of the candidates in falling order, so only that prefix is sorted
  // (a whole vocabulary of 128k took 10 ms a row to sort).
  size_t n = cand_.size();
  if (opts_.top_k > 0 && size_t(opts_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + opts_.top_k, cand_.end(), by_logit);
    n = size_t(opts_.top_k);
  }
  double max_l = cand_[0].first;
  for (size_t i = 1; i < n; ++i) max_l = std::max(max_l, double(cand_[i].first));
  if (!std::isfinite(max_l)) {  // every candidate banned (-inf), or one biased to +inf: the best
    return std::min_element(cand_.begin(), cand_.begin() + std::ptrdiff_t(n), by_logit)->second;
  }
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(double(cand_[i].first) - max_l);
  auto prob = [&](const std::pair<float, int32_t>& c) {
    return std::exp(double(c.first) - max_l) / sum;
  };
  if (opts_.min_p > 0) {  // p >= p_max * min_p: the candidates before them stay in front
    const size_t considered = n;
    const double floor = (1.0 / sum) * opts_.min_p;
    n = size_t(std::partition(cand_.begin(), cand_.begin() + std::ptrdiff_t(n),
                              [&](const auto& c) { return prob(c) >= floor; }) -
               cand_.begin());
    if (n == 0) {  // min_p above 1: the best candidate alone, as with min_p 1
      std::iter_swap(
          cand_.begin(),
          std::min_element(cand_.begin(), cand_.begin() + std::ptrdiff_t(considered), by_logit));
      n = 1;
    }
  }
  if (opts_.top_p < 1.0f) {  // the smallest prefix reaching top_p: sort more until it does
    for (size_t k = std::min<size_t>(n, 256);; k = std::min(n, 4 * k)) {
      std::partial_sort(cand_.begin(), cand_.begin() + std::ptrdiff_t(k),
                        cand_.begin() + std::ptrdiff_t(n), by_logit);
      double cum = 0;
      size_t keep = 0;
      while (keep < k && cum < opts_.top_p) cum += prob(cand_[keep++]);
      if (cum >= opts_.top_p || k == n) {
        n = keep;
        break;
      }
    }
  }
  cand_.resize(n);

  std::vector<double> w(n);
  for (size_t i = 0; i < n; ++i) {
    w[i] = std::exp((double(cand_[i].first) - max_l) / double(opts_.temperature));
  }
  std::discrete_distribution<size_t> dist(w.begin(), w.end());
  return cand_[dist(rng_)].second;
}

}  // namespace trit::engine
