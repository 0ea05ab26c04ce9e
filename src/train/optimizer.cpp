// AdamW and gradient clipping with PyTorch's arithmetic (see optimizer.h).
#include "train/optimizer.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace trit {

static_assert(std::endian::native == std::endian::little, "the AdamW blob is little-endian");

namespace {

constexpr char kMagic[8] = {'T', 'R', 'I', 'T', 'A', 'D', 'A', 'M'};
constexpr uint32_t kVersion = 1;

// One tensor's update. Every f32 operation below is one PyTorch CPU kernel's arithmetic, with
// std::fma where PyTorch's vectorised kernels fuse (lerp's fmadd, and addcmul's
// self + (value * t1) * t2 as the compiler contracts it): with these, trit's AdamW matched
// torch 2.11's CPU AdamW (foreach=False) bit for bit over unclipped steps.
struct AdamWScalars {
  float decay;            // 1 - lr * wd
  float one_minus_beta1;  // lerp weight
  float beta2;
  float one_minus_beta2;
  float bc2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
  float neg_step_size;  // -lr / (1 - beta1^t)
};

[[gnu::always_inline]] inline void adamw_body(float* p, const float* g, float* m, float* v,
                                              int64_t n, const AdamWScalars& k) {
  for (int64_t i = 0; i < n; ++i) {
    if (k.decay != 1.0f) p[i] = p[i] * k.decay;  // param.mul_(1 - lr * wd)
    // exp_avg.lerp_(grad, w): fma(w, end - self, self) for |w| < 0.5, else
    // fma(w - 1, end - self, end)
    if (std::fabs(k.one_minus_beta1) < 0.5f) {
      m[i] = std::fma(k.one_minus_beta1, g[i] - m[i], m[i]);
    } else {
      m[i] = std::fma(k.one_minus_beta1 - 1.0f, g[i] - m[i], g[i]);
    }
    v[i] = v[i] * k.beta2;                                     // exp_avg_sq.mul_(beta2)
    v[i] = std::fma(k.one_minus_beta2 * g[i], g[i], v[i]);     // .addcmul_(g, g, 1 - beta2)
    const float denom = std::sqrt(v[i]) / k.bc2_sqrt + k.eps;  // (v.sqrt() / bc2).add_(eps)
    p[i] = p[i] + k.neg_step_size * m[i] / denom;              // addcdiv_(m, denom, -step_size)
  }
}

void adamw_update_generic(float* p, const float* g, float* m, float* v, int64_t n,
                          const AdamWScalars& k) {
  adamw_body(p, g, m, v, n, k);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same code with the FMA instruction inlined (std::fma is otherwise a libm call); fma is
// correctly rounded either way, so both give the same bits.
[[gnu::target("avx2,fma")]] void adamw_update_fma(float* p, const float* g, float* m, float* v,
                                                  int64_t n, const AdamWScalars& k) {
  adamw_body(p, g, m, v, n, k);
}
#endif

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_fma) return adamw_update_fma(p, g, m, v, n, k);
#endif
  adamw_update_generic(p, g, m, v, n, k);
}

class BlobWriter {
 public:
  template <class T>
  void put(const T& x) {
    out_.append(reinterpret_cast<const char*>(&x), sizeof(T));
  }
  void put_bytes(const void* data, size_t n) { out_.append(static_cast<const char*>(data), n); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class BlobReader {
 public:
  BlobReader(std::string_view data, std::string_view what) : data_(data), what_(what) {}
  void get_bytes(void* dst, size_t n) {
    if (n > data_.size() - pos_)
      fail(what_, ": truncated at byte ", pos_, " (", n, " more needed)");
    std::memcpy(dst, data_.data() + pos_, n);
    pos_ += n;
  }
  template <class T>
  T get() {
    T x;
    get_bytes(&x, sizeof(T));
    return x;
  }
  size_t left() const { return data_.size() - pos_; }

 private:
  std::string_view data_;
  std::string_view what_;
  size_t pos_ = 0;
};

}  // namespace

AdamW::AdamW(AdamWOptions opts) : opts_(opts) {
  if (!(opts.beta1 >= 0 && opts.beta1 < 1))
    fail("adamw: beta1 must be in [0, 1), got ", opts.beta1);
  if (!(opts.beta2 >= 0 && opts.beta2 < 1))
    fail("adamw: beta2 must be in [0, 1), got ", opts.beta2);
  if (!(opts.eps >= 0)) fail("adamw: eps must be >= 0, got ", opts.eps);
  if (!(opts.weight_decay >= 0)) fail("adamw: weight decay must be >= 0, got ", opts.weight_decay);
}

void AdamW::step(const std::vector<ParamRef>& params, double lr) {
  if (!std::isfinite(lr) || lr < 0) fail("adamw: learning rate must be finite and >= 0, got ", lr);
  for (const ParamRef& p : params) {
    if (p.grad == nullptr) continue;
    if (p.value == nullptr || p.n < 0) fail("adamw: parameter ", p.name, " has no values");
    auto [it, fresh] = moments_.try_emplace(p.name);
    AdamWMoments& s = it->second;
    if (fresh) {
      s.m.assign(size_t(p.n), 0.0f);
      s.v.assign(size_t(p.n), 0.0f);
    } else if (int64_t(s.m.size()) != p.n) {
      fail("adamw: parameter ", p.name, " has ", p.n, " elements but its moments have ",
           s.m.size());
    }
  }
  ++t_;
  const double b1 = opts_.beta1, b2 = opts_.beta2;
  const float decay = float(1.0 - lr * opts_.weight_decay);
  for (const ParamRef& p : params) {
    if (p.grad == nullptr) continue;
    AdamWMoments& s = moments_.at(p.name);
    const int64_t step = ++s.step;
    const double bias_correction1 = 1.0 - std::pow(b1, double(step));
    const double bias_correction2 = 1.0 - std::pow(b2, double(step));
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    AdamWScalars k;
    k.decay = opts_.weight_decay != 0 ? decay : 1.0f;
    k.one_minus_beta1 = float(1.0 - b1);
    k.beta2 = float(b2);
    k.one_minus_beta2 = float(1.0 - b2);
    k.bc2_sqrt = float(bias_correction2_sqrt);
    k.eps = float(opts_.eps);
    k.neg_step_size = float(-step_size);
    adamw_update(p.value, p.grad, s.m.data(), s.v.data(), p.n, k);
  }
}

void AdamW::set_state(int64_t t, std::map<std::string, AdamWMoments> moments) {
  if (t < 0) fail("adamw: negative step count ", t);
  for (const auto& [name, s] : moments) {
    if (s.m.size() != s.v.size()) {
      fail("adamw: parameter ", name, ": exp_avg has ", s.m.size(), " elements but exp_avg_sq ",
           s.v.size());
    }
    if (s.step < 0) fail("adamw: parameter ", name, ": negative step count ", s.step);
  }
  t_ = t;
  moments_ = std::move(moments);
}

std::string AdamW::save() const {
  BlobWriter w;
  w.put_bytes(kMagic, sizeof(kMagic));
  w.put(kVersion);
  w.put(t_);
  w.put(uint64_t(moments_.size()));
  for (const auto& [name, s] : moments_) {
    w.put(uint32_t(name.size()));
    w.put_bytes(name.data(), name.size());
    w.put(s.step);
    w.put(int64_t(s.m.size()));
    w.put_bytes(s.m.data(), s.m.size() * sizeof(float));
    w.put_bytes(s.v.data(), s.v.size() * sizeof(float));
  }
  return w.take();
}

void AdamW::load(std::string_view blob, std::string_view what) {
  BlobReader r(blob, what);
  char magic[sizeof(kMagic)];
  r.get_bytes(magic, sizeof(magic));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    fail(what, ": not an AdamW state (bad magic)");
  const uint32_t version = r.get<uint32_t>();
  if (version != kVersion)
    fail(what, ": AdamW state version ", version, " (expected ", kVersion, ")");
  const int64_t t = r.get<int64_t>();
  const uint64_t count = r.get<uint64_t>();
  std::map<std::string, AdamWMoments> moments;
  for (uint64_t k = 0; k < count; ++k) {
    const uint32_t len = r.get<uint32_t>();
    if (len > r.left()) fail(what, ": tensor name of ", len, " bytes runs past the end");
    std::string name(len, '\0');
    r.get_bytes(name.data(), len);
    AdamWMoments s;
    s.step = r.get<int64_t>();
    const int64_t n = r.get<int64_t>();
    if (n < 0 || uint64_t(n) > r.left() / (2 * sizeof(float))) {
      fail(what, ": tensor ", name, ": ", n, " elements run past the end");
    }
    s.m.resize(size_t(n));
    s.v.resize(size_t(n));
    r.get_bytes(s.m.data(), size_t(n) * sizeof(float));
    r.get_bytes(s.v.data(), size_t(n) * sizeof(float));
    if (!moments.emplace(std::move(name), std::move(s)).second) {
      fail(what, ": tensor listed twice");
    }
  }
  if (r.left() != 0) fail(what, ": ", r.left(), " trailing bytes");
  set_state(t, std::move(moments));
}

float clip_grad_norm(std::span<const std::span<float>> grads, float max_norm) {
  // torch: norms = [vector_norm(g) for g in grads]; total = vector_norm(stack(norms)), in f32.
  // The sums run in double here, so each norm is the correctly rounded f32 value.
  double total_sq = 0.0;
  for (std::span<float> g : grads) {
    double sq = 0.0;
    for (float x : g) sq += double(x) * double(x);
    const float norm = float(std::sqrt(sq));
    total_sq += double(norm) * double(norm);
  }
  const float total = float(std::sqrt(total_sq));
  if (!(max_norm > 0) || !std::isfinite(total)) return total;
  // clip_coef = max_norm / (total + 1e-6), where python's scalar / tensor is
  // reciprocal(tensor) * scalar; clamped to 1, and multiplying by 1 changes nothing.
  const float coef = (1.0f / (total + 1e-6f)) * max_norm;
  if (coef < 1.0f) {
    for (std::span<float> g : grads) {
      for (float& x : g) x = x * coef;
    }
  }
  return total;
}

}  // namespace trit
