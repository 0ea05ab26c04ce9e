// AdamW and gradient clipping with PyTorch's arithmetic (see optimizer.h).
#include "train/optimizer.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "core/adamw.h"
#include "core/error.h"

namespace trit::engine {

static_assert(std::endian::native == std::endian::little, "the AdamW blob is little-endian");

namespace {

constexpr char kMagic[8] = {'T', 'R', 'I', 'T', 'A', 'D', 'A', 'M'};
constexpr uint32_t kVersion = 1;

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
  for (const ParamRef& p : params) {
    if (p.grad == nullptr) continue;
    AdamWMoments& s = moments_.at(p.name);
    adamw_update(p.value, p.grad, s.m.data(), s.v.data(), p.n, adamw_scalars(opts_, lr, ++s.step));
  }
}

AdamWScalars adamw_scalars(const AdamWOptions& o, double lr, int64_t step) {
  const double b1 = o.beta1, b2 = o.beta2;
  const double bias_correction1 = 1.0 - std::pow(b1, double(step));
  const double bias_correction2 = 1.0 - std::pow(b2, double(step));
  const double step_size = lr / bias_correction1;
  AdamWScalars k;
  k.decay = o.weight_decay != 0 ? float(1.0 - lr * o.weight_decay) : 1.0f;
  k.one_minus_beta1 = float(1.0 - b1);
  k.beta2 = float(b2);
  k.one_minus_beta2 = float(1.0 - b2);
  k.bc2_sqrt = float(std::sqrt(bias_correction2));
  k.eps = float(o.eps);
  k.neg_step_size = float(-step_size);
  return k;
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

GradClip clip_from_sums(std::span<const double> sums, float max_norm) {
  // torch: norms = [vector_norm(g) for g in grads]; total = vector_norm(stack(norms)), in f32.
  // With sums in double, each norm is the correctly rounded f32 value.
  double total_sq = 0.0;
  for (double sq : sums) {
    const float norm = float(std::sqrt(sq));
    total_sq += double(norm) * double(norm);
  }
  GradClip c;
  c.norm = float(std::sqrt(total_sq));
  if (!(max_norm > 0) || !std::isfinite(c.norm)) return c;
  // clip_coef = max_norm / (total + 1e-6), where python's scalar / tensor is
  // reciprocal(tensor) * scalar; clamped to 1, and multiplying by 1 changes nothing.
  const float coef = (1.0f / (c.norm + 1e-6f)) * max_norm;
  if (coef < 1.0f) c.scale = coef;
  return c;
}

float clip_grad_norm(std::span<const std::span<float>> grads, float max_norm) {
  std::vector<double> sums;
  for (std::span<float> g : grads) {
    double sq = 0.0;
    for (float x : g) sq += double(x) * double(x);
    sums.push_back(sq);
  }
  const GradClip c = clip_from_sums(sums, max_norm);
  if (c.scale != 1.0f) {
    for (std::span<float> g : grads) {
      for (float& x : g) x = x * c.scale;
    }
  }
  return c.norm;
}

}  // namespace trit::engine
