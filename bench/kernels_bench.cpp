// Kernel sandbox: times ternary_matmul (TQ2_0, I2_S) and float_matmul (F16, Q6_K, Q8_0, ...)
// at each CPU level, at decode (1 token) and batch (64 tokens) shapes of BitNet b1.58 2B4T,
// after checking each level against the scalar reference. Kernel names with a _t suffix
// (tq2_0_t, i2_s_t) time training's transposed product dx += W^T dy instead (f32 dy; threads
// split the columns as the CPU backend does), checked bit for bit against its reference.
//
//   kernels_bench [-t N[,N...]] [--level scalar,avx2,avx512|all] [--kernel NAME[,NAME...]]
//                 [--shape N_INxN_OUT] [--tokens N[,N...]] [--ws MIB] [--time SECONDS]
//
// Defaults: threads 1 and all hardware threads; every level the processor has; kernels
// tq2_0 and i2_s at 2560x6912 (gate/up) and 6912x2560 (down), f16, q6_k and q8_0 at
// 2560x128256 (the LM head); tokens 1 and 64.
//
// Each line gives the time per call, the weight bytes streamed per second (GB/s, 1e9) and
// the arithmetic rate (GOPS: 2 * n_in * n_out * tokens per second). Decoding a token streams
// every weight once, so at 1 token a kernel should approach the memory bandwidth (see membw);
// weights smaller than the working set (--ws, default 512 MiB) are replicated and cycled so
// that they come from memory, not from cache (make it several times the last-level cache). At 64
// tokens the kernels are compute bound and GOPS is the figure of merit.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_backward.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace {

using trit::engine::CpuLevel;
using trit::engine::DType;
using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<int> threads;
  std::vector<CpuLevel> levels;
  std::vector<std::string> kernels;
  int64_t n_in = 0, n_out = 0;  // 0: the kernel's default shapes
  std::vector<int64_t> tokens = {1, 64};
  int64_t ws_mib = 512;
  double seconds = 0.5;
};

// xorshift64*: fast enough to fill hundreds of MB.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
  float uniform() { return float(next() >> 40) / float(1 << 24) * 2.0f - 1.0f; }
};

void put16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}

// A 64-byte aligned byte buffer (tensors in a memory-mapped GGUF file are aligned too).
struct Bytes {
  std::unique_ptr<uint8_t, decltype(&std::free)> p{nullptr, &std::free};
  explicit Bytes(size_t size)
      : p(static_cast<uint8_t*>(std::aligned_alloc(64, (size + 63) / 64 * 64)), &std::free) {
    if (!p) trit::engine::fail("out of memory");
  }
  uint8_t* data() const { return p.get(); }
  uint8_t& operator[](size_t i) { return p.get()[i]; }
};

// Random valid weights of n_out rows of n_in (one tensor, I2_S tail included).
Bytes make_weights(DType type, int64_t n_in, int64_t n_out, uint64_t seed) {
  Rng rng(seed);
  const int64_t bytes = int64_t(*trit::engine::tensor_bytes(type, n_in, n_in * n_out));
  Bytes w(static_cast<size_t>(bytes));
  // Bytes of four valid 2-bit codes (0, 1, 2).
  uint8_t valid[81];
  for (int i = 0; i < 81; ++i) {
    valid[i] = uint8_t((i % 3) | (i / 3 % 3) << 2 | (i / 9 % 3) << 4 | (i / 27 % 3) << 6);
  }
  auto fill = [&](uint8_t* p, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
      uint64_t r = rng.next();
      for (int64_t k = i; k < std::min(n, i + 8); ++k, r >>= 8) p[k] = uint8_t(r);
    }
  };
  switch (type) {
    case DType::TQ2_0: {
      const uint16_t d = trit::engine::f32_to_fp16(0.03f);
      for (int64_t b = 0; b < bytes / 66; ++b) {
        for (int i = 0; i < 64; ++i) w[size_t(b * 66 + i)] = valid[rng.next() % 81];
        put16(&w[size_t(b * 66 + 64)], d);
      }
      break;
    }
    case DType::TQ1_0: {  // each byte a number of five trits, encoded as the format encodes it
      const uint16_t d = trit::engine::f32_to_fp16(0.03f);
      for (int64_t b = 0; b < bytes / 54; ++b) {
        for (int i = 0; i < 52; ++i)
          w[size_t(b * 54 + i)] = uint8_t((rng.next() % 243 * 256 + 242) / 243);
        put16(&w[size_t(b * 54 + 52)], d);
      }
      break;
    }
    case DType::I2_S: {
      for (int64_t i = 0; i < bytes - 32; ++i) w[size_t(i)] = valid[rng.next() % 81];
      const float s = 0.03f;
      std::memcpy(&w[size_t(bytes - 32)], &s, 4);
      break;
    }
    case DType::F32:
      for (int64_t i = 0; i < bytes / 4; ++i) {
        const float v = rng.uniform();
        std::memcpy(&w[size_t(i * 4)], &v, 4);
      }
      break;
    case DType::F16:
    case DType::BF16: {
      fill(w.data(), bytes);
      // Keep the exponents small: values of magnitude below 2.
      for (int64_t i = 0; i < bytes / 2; ++i) {
        uint16_t h;
        std::memcpy(&h, &w[size_t(i * 2)], 2);
        h = type == DType::F16 ? uint16_t((h & 0x83ff) | 0x3800) : uint16_t((h & 0x807f) | 0x3f00);
        put16(&w[size_t(i * 2)], h);
      }
      break;
    }
    case DType::Q8_0:
      fill(w.data(), bytes);
      for (int64_t b = 0; b < bytes / 34; ++b)
        put16(&w[size_t(b * 34)], trit::engine::f32_to_fp16(0.01f));
      break;
    case DType::Q6_K:
      fill(w.data(), bytes);
      for (int64_t b = 0; b < bytes / 210; ++b) {
        put16(&w[size_t(b * 210 + 208)], trit::engine::f32_to_fp16(0.001f));
      }
      break;
    default:
      trit::engine::fail("kernels_bench: no generator for ", trit::engine::dtype_name(type));
  }
  return w;
}

struct Job {
  DType type;
  int64_t n_in, n_out;
  bool transposed = false;  // dx += W^T dy (training's backward pass)
};

std::vector<Job> default_jobs(const std::string& kernel) {
  const bool transposed = kernel.size() > 2 && kernel.substr(kernel.size() - 2) == "_t";
  const auto t =
      trit::engine::dtype_from_name(transposed ? kernel.substr(0, kernel.size() - 2) : kernel);
  if (!t) trit::engine::fail("unknown kernel '", kernel, "'");
  if (trit::engine::dtype_traits(*t).ternary) {
    return {{*t, 2560, 6912, transposed}, {*t, 6912, 2560, transposed}};
  }
  if (transposed) trit::engine::fail("'", kernel, "': only ternary kernels have a _t form");
  return {{*t, 2560, 128256}};
}

// The weights of a job: enough copies to fill the working set, made once for all runs.
struct Weights {
  std::vector<Bytes> copies;
  std::vector<float> uniform;  // ternary_uniform_scale of each copy, as a model loader finds it
};

Weights make_job_weights(const Job& job, const Options& opt) {
  const int64_t bytes_one =
      int64_t(*trit::engine::tensor_bytes(job.type, job.n_in, job.n_in * job.n_out));
  const int64_t copies = std::max<int64_t>(1, (opt.ws_mib << 20) / bytes_one);
  const bool ternary = trit::engine::dtype_traits(job.type).ternary;
  Weights w;
  for (int64_t c = 0; c < copies; ++c) {
    w.copies.push_back(make_weights(job.type, job.n_in, job.n_out, uint64_t(c + 1)));
    w.uniform.push_back(ternary ? trit::engine::ternary_uniform_scale(
                                      job.type, w.copies.back().data(), job.n_in, job.n_out)
                                : 0.0f);
  }
  return w;
}

// Calls `once` at least 3 times and for `seconds`: the best and total times of the calls.
struct Timing {
  double best = 1e30, total = 0;
  int iters = 0;
};
template <class F>
Timing time_calls(F&& once, double seconds) {
  Timing t;
  const auto start = Clock::now();
  while (t.iters < 3 || (std::chrono::duration<double>(Clock::now() - start).count() < seconds &&
                         t.iters < 100000)) {
    const auto t0 = Clock::now();
    once();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    t.best = std::min(t.best, s);
    t.total += s;
    ++t.iters;
  }
  return t;
}

trit::engine::TernaryMatrix ternary_of(const Job& job, const Bytes& w, float uniform) {
  trit::engine::TernaryMatrix m;
  m.type = job.type;
  m.data = w.data();
  m.n_in = job.n_in;
  m.n_out = job.n_out;
  m.uniform_scale = uniform;
  return m;
}

// The transposed product: dx (tokens, n_in) += W^T dy, dy (tokens, n_out).
bool run_transposed(const Job& job, const Weights& weights, int64_t tokens, int threads,
                    CpuLevel level, const Options& opt) {
  const int64_t copies = int64_t(weights.copies.size());
  Rng rng(98);
  std::vector<float> dy(static_cast<size_t>(tokens * job.n_out));
  for (auto& v : dy) v = rng.uniform();
  std::vector<float> dx(static_cast<size_t>(tokens * job.n_in), 0.0f);
  trit::engine::ThreadPool pool(threads);
  auto matrix = [&](int64_t c) {
    return ternary_of(job, weights.copies[size_t(c)], weights.uniform[size_t(c)]);
  };
  // Check the first 300 columns against the reference, bit for bit.
  bool ok = true;
  {
    const int64_t check = std::min<int64_t>(job.n_in, 300);
    std::vector<float> a(dx.size(), 0.0f), b(dx.size(), 0.0f);
    trit::engine::ternary_matmul_transposed_ref(matrix(0), dy.data(), job.n_out, tokens, 1.0f,
                                                a.data(), 0, check);
    trit::engine::ternary_matmul_transposed(matrix(0), dy.data(), job.n_out, tokens, 1.0f, b.data(),
                                            0, check, level);
    ok = std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
  }
  int64_t copy = 0;
  auto once = [&] {
    const int64_t c = copy;
    copy = (copy + 1) % copies;
    pool.parallel_for(
        job.n_in,
        [&](int64_t c0, int64_t c1, int) {
          trit::engine::ternary_matmul_transposed(matrix(c), dy.data(), job.n_out, tokens, 1.0f,
                                                  dx.data(), c0, c1, level);
        },
        256);
  };
  once();
  const Timing tm = time_calls(once, opt.seconds);
  const double best = tm.best, total = tm.total;
  const int iters = tm.iters;
  const double ops = 2.0 * double(job.n_in) * double(job.n_out) * double(tokens);
  std::printf(
      "%-8s %-7s %5lldx%-6lld tokens=%-3lld threads=%-2d %9.3f ms  %8.1f GFLOPS  "
      "(best of %d, mean %.3f ms)%s\n",
      (std::string(trit::engine::dtype_name(job.type)) + "_t").c_str(),
      std::string(trit::engine::cpu_level_name(level)).c_str(), (long long)job.n_in,
      (long long)job.n_out, (long long)tokens, threads, best * 1e3, ops / best / 1e9, iters,
      total / iters * 1e3, ok ? "" : "  CHECK FAILED");
  std::fflush(stdout);
  return ok;
}

// One timed configuration. Returns false when the check against scalar fails.
bool run_job(const Job& job, const Weights& weights, int64_t tokens, int threads, CpuLevel level,
             const Options& opt) {
  if (job.transposed) return run_transposed(job, weights, tokens, threads, level, opt);
  const bool ternary = trit::engine::dtype_traits(job.type).ternary;
  const int64_t copies = int64_t(weights.copies.size());
  Rng rng(99);
  std::vector<float> x(static_cast<size_t>(tokens * job.n_in));
  for (auto& v : x) v = rng.uniform();
  trit::engine::QuantizedActs qa;
  trit::engine::quantize_acts(x.data(), tokens, job.n_in, qa, level);
  std::vector<float> y(static_cast<size_t>(tokens * job.n_out));
  trit::engine::ThreadPool pool(threads);

  // Scalar is slow: time it on fewer rows.
  int64_t rows = job.n_out;
  if (level == CpuLevel::Scalar) {
    const double macs = double(job.n_in) * double(job.n_out) * double(tokens);
    if (macs > 2e9) rows = std::max<int64_t>(64, int64_t(double(job.n_out) * 2e9 / macs)) / 4 * 4;
  }

  auto call = [&](int64_t c, int64_t r0, int64_t r1, CpuLevel lv, float* out) {
    const Bytes& w = weights.copies[size_t(c)];
    if (ternary) {
      trit::engine::TernaryMatrix m;
      m.type = job.type;
      m.data = w.data();
      m.n_in = job.n_in;
      m.n_out = job.n_out;
      m.uniform_scale = weights.uniform[size_t(c)];
      trit::engine::ternary_matmul(m, qa, out, job.n_out, r0, r1, lv);
    } else {
      const trit::engine::FloatMatrix m{job.type, w.data(), job.n_in, job.n_out};
      trit::engine::float_matmul(m, x.data(), tokens, out, job.n_out, r0, r1, lv);
    }
  };

  // Check a band of rows against scalar.
  bool ok = true;
  if (level != CpuLevel::Scalar) {
    const int64_t check = std::min<int64_t>(job.n_out, 37);
    std::vector<float> a(y.size()), b(y.size());
    call(0, 0, check, CpuLevel::Scalar, a.data());
    call(0, 0, check, level, b.data());
    for (int64_t t = 0; t < tokens && ok; ++t) {
      for (int64_t r = 0; r < check; ++r) {
        const float u = a[size_t(t * job.n_out + r)], v = b[size_t(t * job.n_out + r)];
        const bool same = ternary ? std::memcmp(&u, &v, 4) == 0
                                  : std::fabs(u - v) <= 1e-4f * (1.0f + std::fabs(u));
        if (!same) {
          std::printf("MISMATCH %s %s row %lld token %lld: scalar %.9g, got %.9g\n",
                      std::string(trit::engine::dtype_name(job.type)).c_str(),
                      std::string(trit::engine::cpu_level_name(level)).c_str(), (long long)r,
                      (long long)t, double(u), double(v));
          ok = false;
          break;
        }
      }
    }
  }

  int64_t copy = 0;
  auto once = [&] {
    const int64_t c = copy;
    copy = (copy + 1) % copies;
    pool.parallel_for(
        rows, [&](int64_t r0, int64_t r1, int) { call(c, r0, r1, level, y.data()); }, 4);
  };
  once();  // warm up (and fault in pages)
  const Timing tm = time_calls(once, opt.seconds);
  const double best = tm.best, total = tm.total;
  const int iters = tm.iters;
  const double wbytes = double(rows) * double(trit::engine::row_bytes(job.type, job.n_in));
  const double ops = 2.0 * double(job.n_in) * double(rows) * double(tokens);
  std::printf(
      "%-6s %-7s %5lldx%-6lld tokens=%-3lld threads=%-2d rows=%-6lld %9.3f ms  %7.2f GB/s  "
      "%8.1f GOPS  (best of %d, mean %.3f ms)%s\n",
      std::string(trit::engine::dtype_name(job.type)).c_str(),
      std::string(trit::engine::cpu_level_name(level)).c_str(), (long long)job.n_in,
      (long long)job.n_out, (long long)tokens, threads, (long long)rows, best * 1e3,
      wbytes / best / 1e9, ops / best / 1e9, iters, total / iters * 1e3,
      ok ? "" : "  CHECK FAILED");
  std::fflush(stdout);
  return ok;
}

template <class T, class F>
std::vector<T> split_list(const std::string& s, F parse) {
  std::vector<T> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = s.find(',', pos);
    const std::string item =
        s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) out.push_back(parse(item));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: kernels_bench [-t THREADS[,THREADS]] [--level scalar,avx2,avx512|all]\n"
               "                     [--kernel "
               "tq1_0,tq2_0,i2_s,f16,q6_k,q8_0,bf16,f32,tq1_0_t,tq2_0_t,i2_s_t]\n"
               "                     [--shape N_INxN_OUT] [--tokens 1,64] [--ws MIB] [--time S]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options opt;
    const int hw = std::max(1, int(std::thread::hardware_concurrency()));
    std::string level_arg = "all";
    std::string kernel_arg = "tq2_0,i2_s,f16,q6_k,q8_0";
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) usage();
        return argv[++i];
      };
      if (a == "-t" || a == "--threads") {
        opt.threads = split_list<int>(value(), [](const std::string& s) { return std::stoi(s); });
      } else if (a == "--level") {
        level_arg = value();
      } else if (a == "--kernel") {
        kernel_arg = value();
      } else if (a == "--shape") {
        const std::string v = value();
        const size_t xpos = v.find('x');
        if (xpos == std::string::npos) usage();
        opt.n_in = std::stoll(v.substr(0, xpos));
        opt.n_out = std::stoll(v.substr(xpos + 1));
      } else if (a == "--tokens") {
        opt.tokens =
            split_list<int64_t>(value(), [](const std::string& s) { return std::stoll(s); });
      } else if (a == "--ws") {
        opt.ws_mib = std::stoll(value());
      } else if (a == "--time") {
        opt.seconds = std::stod(value());
      } else {
        usage();
      }
    }
    if (opt.threads.empty()) opt.threads = hw > 1 ? std::vector<int>{1, hw} : std::vector<int>{1};
    const CpuLevel top = trit::engine::detect_cpu_level();
    const auto wanted = split_list<std::string>(level_arg, [](const std::string& s) { return s; });
    for (CpuLevel l : {CpuLevel::Scalar, CpuLevel::Avx2, CpuLevel::Avx512Vnni}) {
      if (l > top) continue;
      for (const std::string& w : wanted) {
        if (w == "all" || w == trit::engine::cpu_level_name(l)) opt.levels.push_back(l);
      }
    }
    if (opt.levels.empty()) trit::engine::fail("level '", level_arg, "' not available here");
    std::printf("cpu: %s; threads:", std::string(trit::engine::cpu_level_name(top)).c_str());
    for (int t : opt.threads) std::printf(" %d", t);
    std::printf("\n");

    bool ok = true;
    for (const std::string& k :
         split_list<std::string>(kernel_arg, [](const std::string& s) { return s; })) {
      std::vector<Job> jobs = default_jobs(k);
      if (opt.n_in > 0) jobs = {{jobs[0].type, opt.n_in, opt.n_out, jobs[0].transposed}};
      for (const Job& job : jobs) {
        const Weights weights = make_job_weights(job, opt);
        for (int64_t tokens : opt.tokens) {
          for (int threads : opt.threads) {
            for (CpuLevel level : opt.levels)
              ok &= run_job(job, weights, tokens, threads, level, opt);
          }
        }
      }
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernels_bench: %s\n", e.what());
    return 1;
  }
}
