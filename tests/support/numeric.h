// Random test data and comparisons of results with their references.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace trit::engine::test {

// n values of normal(0, sd) from a seed.
inline std::vector<float> randn(int64_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

// The relative L2 error of got against want: sqrt(sum (got - want)^2 / sum want^2) (0 when
// both are all zero, infinite when only want is). Different sizes fail the test.
template <class A, class B>
double rel_l2(const A& got, const B& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (den == 0) return num == 0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

// Logits (rows of V) against a reference: max |got - want| <= tol * (max - min of want), and
// the top-1 of every row the same, unless the reference's own top two are within that bound.
inline void expect_logits_close(const std::vector<float>& want, const std::vector<float>& got,
                                int64_t V, double tol, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  ASSERT_FALSE(want.empty()) << what;
  const auto [lo, hi] = std::minmax_element(want.begin(), want.end());
  const double bound = tol * (*hi - *lo);
  double max_abs = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::isnan(got[i]) ? INFINITY : std::fabs(double(got[i]) - want[i]);
    if (e > max_abs) max_abs = e, worst = i;
  }
  EXPECT_LE(max_abs, bound) << what << ": max abs error " << max_abs << " ("
                            << max_abs / (*hi - *lo) << " of the logit range " << *hi - *lo
                            << ") at position " << worst / size_t(V) << ", logit "
                            << worst % size_t(V);
  for (size_t p = 0; p < want.size() / size_t(V); ++p) {
    const float* w = want.data() + p * size_t(V);
    const float* g = got.data() + p * size_t(V);
    const int64_t a = std::max_element(w, w + V) - w, b = std::max_element(g, g + V) - g;
    if (a != b) {
      EXPECT_LE(w[a] - w[b], bound)
          << what << ": position " << p << ": top-1 " << b << ", the reference's is " << a << " ("
          << w[a] << " vs " << w[b] << ")";
    }
  }
}

}  // namespace trit::engine::test
