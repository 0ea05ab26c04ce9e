// Helpers shared by the backend parity tests (backend/vulkan/*_test.cpp, and the CPU backend's
// own tests): opening the Vulkan backend with the skip rule, device tensors, ternary and float
// weights, and comparing results with a per-output threshold.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/vulkan/device_info.h"
#include "backend/vulkan/vulkan_backend.h"
#include "core/error.h"
#include "core/quant.h"
#include "core/weights.h"
#include "support/numeric.h"

namespace trit::engine::test {

inline constexpr uint64_t KiB = 1ull << 10, MiB = 1ull << 20;
using TensorPtr = std::unique_ptr<DeviceTensor>;

inline std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Sets an environment variable (value null: unsets it) for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { had_ ? setenv(name_, old_.c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// True when the message says the machine has no Vulkan loader, driver or device (not a bug).
inline bool says_no_device(const std::string& message) {
  const std::string m = lower(message);
  for (const char* p : {"no vulkan loader", "no vulkan devices", "no vulkan driver",
                        "incompatible_driver", "the vulkan loader"}) {
    if (m.find(p) != std::string::npos) return true;
  }
  return false;
}

// Whether a missing Vulkan device fails the tests that need one (TRIT_REQUIRE_VULKAN=1, as CI
// sets it) instead of skipping them.
inline bool vulkan_required() {
  const char* require = std::getenv("TRIT_REQUIRE_VULKAN");
  return require && std::string(require) == "1";
}

// The machine's Vulkan devices, listed once.
inline const VulkanDeviceList& vulkan_devices() {
  static const VulkanDeviceList list = enumerate_vulkan_devices();
  return list;
}

// Skips the test when the machine has no Vulkan device, or fails it when vulkan_required().
#define REQUIRE_VULKAN_DEVICE()                                                              \
  do {                                                                                       \
    if (::trit::engine::test::vulkan_devices().devices.empty()) {                            \
      if (::trit::engine::test::vulkan_required())                                           \
        FAIL() << "TRIT_REQUIRE_VULKAN=1 but no Vulkan device: "                             \
               << ::trit::engine::test::vulkan_devices().reason;                             \
      GTEST_SKIP() << "no Vulkan device: " << ::trit::engine::test::vulkan_devices().reason; \
    }                                                                                        \
  } while (0)

// Opens the Vulkan backend (any device, lavapipe included) into *out. Leaves it null and skips
// the test when the machine has no Vulkan device or loader, or fails it when TRIT_REQUIRE_VULKAN
// is 1; any other error fails the test. Callers: open_vulkan(..., &vk); if (!vk) return;
inline void open_vulkan(uint64_t max_buffer_bytes, std::unique_ptr<Backend>* out) {
  try {
    *out = make_vulkan_backend(
        {.index = -1, .real_gpu_only = false, .max_buffer_bytes = max_buffer_bytes});
  } catch (const Error& e) {
    if (!says_no_device(e.what())) FAIL() << "make_vulkan_backend: " << e.what();
    if (vulkan_required()) FAIL() << "TRIT_REQUIRE_VULKAN=1: " << e.what();
    GTEST_SKIP() << "no Vulkan device: " << e.what();
  }
}

// True when the message names one of the '|'-separated words (any case).
inline bool names_one_of(const std::string& message, const std::string& words) {
  const std::string m = lower(message);
  for (size_t p = 0, q; p <= words.size(); p = q + 1) {
    q = std::min(words.find('|', p), words.size());
    if (m.find(words.substr(p, q - p)) != std::string::npos) return true;
  }
  return false;
}

// What a refusal of float activations (--act-quant none) names.
inline const std::string kActWords = "act_quant|act-quant|float activations";

inline std::string limit_name(uint64_t bytes) {
  if (bytes == 0) return "unlimited";
  return bytes % MiB == 0 ? cat(bytes / MiB, "MiB") : cat(bytes / KiB, "KiB");
}

inline int n_threads() {
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

// ---- Comparing results -----------------------------------------------------------------------

// One result of an op run: a matrix of cols columns and the rule it is checked by.
struct Out {
  std::string label;
  int64_t cols = 1;
  std::vector<float> v;
  double tol = 0;          // 0: bit-identical (==); else max |got - want| / max |want|
  bool invariant = false;  // identical at every binding limit (bit-identical ones always are)
};

// EXPECTs got to equal want.v (tol 0) or to be within tol of it relative to max |want|, saying
// how many values differ, the max abs and relative error and where the worst one is.
inline void expect_match(const Out& want, const std::vector<float>& got, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.v.size()) << what << ": " << want.label;
  double max_abs = 0, max_ref = 0;
  size_t worst = 0, differ = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = got[i], b = want.v[i];
    max_ref = std::max(max_ref, std::fabs(b));
    differ += a != b;
    const double e = std::isnan(a) || std::isnan(b) ? INFINITY : std::fabs(a - b);
    if (e > max_abs || (a != b && differ == 1 && max_abs == 0)) max_abs = e, worst = i;
  }
  const double rel = max_abs / std::max(max_ref, 1e-30);
  const std::string msg = cat(
      std::setprecision(9), what, ": ", want.label, ": ", differ, " of ", got.size(),
      " values differ; max abs error ", max_abs, ", relative ", rel, " (of max |value| ", max_ref,
      "), worst at [", worst / size_t(want.cols), ", ", worst % size_t(want.cols), "]: got ",
      got.empty() ? 0.0f : got[worst], ", expected ", got.empty() ? 0.0f : want.v[worst]);
  if (tol == 0) {
    EXPECT_EQ(differ, 0u) << msg;
  } else {
    EXPECT_LE(rel, tol) << msg;
  }
}

// ---- Host data and device tensors ------------------------------------------------------------

inline TensorPtr upload(Backend& b, std::string_view name, int64_t rows, int64_t cols,
                        const std::vector<float>& v) {
  TensorPtr t = b.tensor(name, rows, cols);
  b.write(*t, 0, rows, v.data());
  return t;
}

// The first rows of t, checked by tol.
inline Out download(Backend& b, const DeviceTensor& t, int64_t rows, double tol,
                    bool invariant = false) {
  Out o{t.name(), t.cols(), std::vector<float>(size_t(rows * t.cols())), tol,
        invariant || tol == 0};
  b.read(t, 0, rows, o.v.data());
  return o;
}

// A linear layer with the bytes it points into (kept for the life of every backend that saw
// it: a device backend caches uploaded weights).
struct HostWeight {
  std::vector<uint8_t> bytes;
  LinearWeight w;
};

// Uniform trits, scale ~ 1/sqrt(n_in): one scale for the tensor, or (TQ1_0, TQ2_0) one per
// block.
// row_in > n_in: rows stored padded with zero codes to row_in (TernaryMatrix::row_in), as the
// loader packs widths no packed type holds.
inline std::unique_ptr<HostWeight> ternary_weight(DType type, int64_t n_in, int64_t n_out,
                                                  bool block_scales, uint64_t seed,
                                                  int64_t row_in = 0) {
  auto h = std::make_unique<HostWeight>();
  const int64_t stored = row_in > 0 ? row_in : n_in;
  const int64_t n = stored * n_out;
  std::mt19937_64 rng(seed);
  std::vector<int8_t> trits(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    trits[size_t(i)] = i % stored < n_in ? int8_t(int(rng() % 3) - 1) : 0;
  const float scale = 1.0f / std::sqrt(float(n_in));
  if (block_scales) {
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    std::vector<float> d(static_cast<size_t>(n / kQK_K));
    for (float& x : d) x = u(rng) * scale;
    h->bytes.resize(*tensor_bytes(type, stored, n));
    if (type == DType::TQ1_0) {
      pack_tq1_0(trits.data(), d.data(), n, h->bytes.data());
    } else {
      pack_tq2_0(trits.data(), d.data(), n, h->bytes.data());
    }
  } else {
    h->bytes = pack_ternary(type, trits.data(), n, scale);
  }
  h->w.name = cat(dtype_name(type), block_scales ? "_blocks_" : "_", n_out, "x", n_in);
  h->w.m = {type, h->bytes.data(), n_in, n_out,
            ternary_uniform_scale(type, h->bytes.data(), stored, n_out)};
  if (stored != n_in) h->w.m.row_in = stored;
  return h;
}

// A float matrix (f32, f16, bf16, q8_0, q6_K) of normal(0, sd) values.
inline FloatMatrix float_matrix(std::vector<uint8_t>& bytes, DType type, int64_t n_in,
                                int64_t n_out, uint64_t seed, float sd) {
  bytes = quantize(type, randn(n_in * n_out, seed, sd).data(), n_in * n_out);
  return {type, bytes.data(), n_in, n_out};
}

}  // namespace trit::engine::test
