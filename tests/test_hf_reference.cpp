// End to end against Hugging Face transformers: each folder under tests/data/hf_ref (written by
// tools/hf_reference.py on the reference machine: a random BitNet checkpoint, 24 token ids and
// the W1.58A8 logits transformers computed for them) is converted with `trit convert` and run
// with `trit logits`; the logits must agree with the reference.
// TRIT_TEST_DEVICE (default cpu) picks the --device of `trit logits`.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a shell command; returns its exit status and what it printed (stdout and stderr).
std::pair<int, std::string> run(const std::string& cmd) {
  std::FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::vector<float> read_f32(const std::string& path) {
  const std::string bytes = test::read_file(path);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

struct RefCase {
  const char* name;
  const char* type;
};

class HfReference : public ::testing::TestWithParam<RefCase> {};

TEST_P(HfReference, LogitsMatchTransformers) {
  const RefCase& rc = GetParam();
  const std::string dir = std::string(TRIT_TEST_DATA) + "/hf_ref/" + rc.name;
  ASSERT_TRUE(fs::exists(dir + "/config.json")) << dir << " is missing: run tools/hf_reference.py";
  const std::string ids = trim(test::read_file(dir + "/ids.txt"));
  const std::vector<float> ref = read_f32(dir + "/logits.f32");
  const nlohmann::json info = nlohmann::json::parse(test::read_file(dir + "/info.json"));
  const int64_t n_tokens = info.at("n_tokens").get<int64_t>();
  const int64_t n_vocab = info.at("n_vocab").get<int64_t>();
  ASSERT_EQ(int64_t(ref.size()), n_tokens * n_vocab);

  test::TempDir tmp;
  const std::string gguf = tmp.file("model.gguf");
  const std::string out = tmp.file("logits.f32");
  const auto [conv_rc, conv_out] =
      run(quote(TRIT_BIN) + " convert " + quote(dir) + " -o " + quote(gguf) + " --type " + rc.type);
  ASSERT_EQ(conv_rc, 0) << conv_out;
  const char* dev = std::getenv("TRIT_TEST_DEVICE");
  const std::string device = dev && *dev ? dev : "cpu";
  const auto [log_rc, log_out] = run(quote(TRIT_BIN) + " logits -m " + quote(gguf) + " --ids " +
                                     ids + " -o " + quote(out) + " --device " + device);
  ASSERT_EQ(log_rc, 0) << log_out;
  const std::vector<float> got = read_f32(out);
  ASSERT_EQ(got.size(), ref.size()) << "expected " << n_tokens << " x " << n_vocab << " logits";

  double diff2 = 0, ref2 = 0, max_abs = 0;
  int64_t agree = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* a = got.data() + t * n_vocab;
    const float* b = ref.data() + t * n_vocab;
    int64_t arg_a = 0, arg_b = 0;
    for (int64_t v = 0; v < n_vocab; ++v) {
      ASSERT_TRUE(std::isfinite(a[v])) << "token " << t << " logit " << v << " is " << a[v];
      const double d = double(a[v]) - double(b[v]);
      diff2 += d * d;
      ref2 += double(b[v]) * double(b[v]);
      max_abs = std::max(max_abs, std::fabs(d));
      if (a[v] > a[arg_a]) arg_a = v;
      if (b[v] > b[arg_b]) arg_b = v;
    }
    agree += arg_a == arg_b;
  }
  const double rel = std::sqrt(diff2 / ref2);
  const double top1 = double(agree) / double(n_tokens);
  std::printf(
      "hf_ref %s --type %s: rel err %.3e, max abs diff %.3e, top-1 agreement %.3f (%lld/%lld)\n",
      rc.name, rc.type, rel, max_abs, top1, static_cast<long long>(agree),
      static_cast<long long>(n_tokens));
  EXPECT_GE(top1, 0.95);
  EXPECT_LE(rel, 2e-2);
}

INSTANTIATE_TEST_SUITE_P(Cases, HfReference,
                         ::testing::Values(RefCase{"relu2_tied", "tq2_0"},
                                           RefCase{"relu2_tied", "tq1_0"},
                                           RefCase{"relu2_tied", "i2_s"},
                                           RefCase{"silu_untied", "tq2_0"},
                                           RefCase{"packed", "tq2_0"}),
                         [](const ::testing::TestParamInfo<RefCase>& info) {
                           return std::string(info.param.name) + "_" + info.param.type;
                         });

}  // namespace
}  // namespace trit::engine
