// End to end against Hugging Face transformers: each folder under tests/data/hf_ref (written by
// tools/hf_reference.py on the reference machine: a random BitNet checkpoint, 24 token ids and
// the W1.58A8 logits transformers computed for them) is converted with `trit convert` and run
// with `trit logits`; the logits must agree with the reference.
// TRIT_TEST_DEVICE (default cpu) picks the --device of `trit logits`.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/cli.h"
#include "support/files.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;

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
  const std::vector<float> ref = test::read_f32_file(dir + "/logits.f32");
  const nlohmann::json info = nlohmann::json::parse(test::read_file(dir + "/info.json"));
  const int64_t n_tokens = info.at("n_tokens").get<int64_t>();
  const int64_t n_vocab = info.at("n_vocab").get<int64_t>();
  ASSERT_EQ(int64_t(ref.size()), n_tokens * n_vocab);

  test::TempDir tmp;
  const std::string gguf = tmp.file("model.gguf");
  const std::string out = tmp.file("logits.f32");
  const test::ShellResult conv =
      test::run_shell(test::trit_command({"convert", dir, "-o", gguf, "--type", rc.type}));
  ASSERT_EQ(conv.rc, 0) << conv.output;
  const char* dev = std::getenv("TRIT_TEST_DEVICE");
  const std::string device = dev && *dev ? dev : "cpu";
  const test::ShellResult log = test::run_shell(
      test::trit_command({"logits", "-m", gguf, "--ids", ids, "-o", out, "--device", device}));
  ASSERT_EQ(log.rc, 0) << log.output;
  const std::vector<float> got = test::read_f32_file(out);
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
