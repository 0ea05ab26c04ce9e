// AdamW's per-element update (adamw.h).
#include "core/adamw.h"

#include <cmath>

namespace trit::engine {
namespace {

// Every f32 operation below is one PyTorch CPU kernel's arithmetic, with std::fma where
// PyTorch's vectorised kernels fuse (lerp's fmadd, and addcmul's self + (value * t1) * t2 as
// the compiler contracts it): with these, trit's AdamW matched torch 2.11's CPU AdamW
// (foreach=False) bit for bit over unclipped steps.
[[gnu::always_inline]] inline void adamw_body(float* p, const float* g, float* m, float* v,
                                              int64_t n, const AdamWScalars& k, float scale) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = scale != 1.0f ? g[i] * scale : g[i];  // grad.mul_(clip_coef)
    if (k.decay != 1.0f) p[i] = p[i] * k.decay;            // param.mul_(1 - lr * wd)
    // exp_avg.lerp_(grad, w): fma(w, end - self, self) for |w| < 0.5, else
    // fma(w - 1, end - self, end)
    if (std::fabs(k.one_minus_beta1) < 0.5f) {
      m[i] = std::fma(k.one_minus_beta1, gi - m[i], m[i]);
    } else {
      m[i] = std::fma(k.one_minus_beta1 - 1.0f, gi - m[i], gi);
    }
    v[i] = v[i] * k.beta2;                                     // exp_avg_sq.mul_(beta2)
    v[i] = std::fma(k.one_minus_beta2 * gi, gi, v[i]);         // .addcmul_(g, g, 1 - beta2)
    const float denom = std::sqrt(v[i]) / k.bc2_sqrt + k.eps;  // (v.sqrt() / bc2).add_(eps)
    p[i] = p[i] + k.neg_step_size * m[i] / denom;              // addcdiv_(m, denom, -step_size)
  }
}

void adamw_update_generic(float* p, const float* g, float* m, float* v, int64_t n,
                          const AdamWScalars& k, float scale) {
  adamw_body(p, g, m, v, n, k, scale);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same code with the FMA instruction inlined (std::fma is otherwise a libm call); fma is
// correctly rounded either way, so both give the same bits.
[[gnu::target("avx2,fma")]] void adamw_update_fma(float* p, const float* g, float* m, float* v,
                                                  int64_t n, const AdamWScalars& k, float scale) {
  adamw_body(p, g, m, v, n, k, scale);
}
#endif

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k,
                  float grad_scale) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_fma) return adamw_update_fma(p, g, m, v, n, k, grad_scale);
#endif
  adamw_update_generic(p, g, m, v, n, k, grad_scale);
}

}  // namespace trit::engine
