#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace trit::engine {

Sampler::Sampler(SamplerOptions opts) : opts_(opts), rng_(opts.seed) {}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history) {
  const bool penalty = opts_.repeat_penalty != 1.0f && opts_.repeat_last_n != 0;
  if (opts_.temperature <= 0 && !penalty) {
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

  if (penalty) {
    const size_t look = opts_.repeat_last_n < 0
                            ? history.size()
                            : std::min(history.size(), size_t(opts_.repeat_last_n));
    std::unordered_set<int32_t> seen(history.end() - std::ptrdiff_t(look), history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= n_vocab) continue;
      float& l = cand_[size_t(id)].first;
      l = l > 0 ? l / opts_.repeat_penalty : l * opts_.repeat_penalty;
    }
  }

  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (opts_.temperature <= 0) {
    return std::min_element(cand_.begin(), cand_.end(), by_logit)->second;
  }

  size_t n = cand_.size();
  if (opts_.top_k > 0 && size_t(opts_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + opts_.top_k, cand_.end(), by_logit);
    n = size_t(opts_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(n);

  // Probabilities at temperature 1 for the p-filters, as llama.cpp applies them.
  std::vector<double> p(n);
  const double max_l = cand_[0].first;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i] = std::exp(double(cand_[i].first) - max_l);
  for (double& v : p) v /= sum;

  if (opts_.top_p < 1.0f) {
    double cum = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += p[i];
      if (cum >= opts_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (opts_.min_p > 0) {
    const double floor = p[0] * opts_.min_p;
    size_t keep = 1;
    while (keep < n && p[keep] >= floor) ++keep;
    n = keep;
  }

  std::vector<double> w(n);
  for (size_t i = 0; i < n; ++i) {
    w[i] = std::exp((double(cand_[i].first) - max_l) / double(opts_.temperature));
  }
  std::discrete_distribution<size_t> dist(w.begin(), w.end());
  return cand_[dist(rng_)].second;
}

}  // namespace trit::engine
