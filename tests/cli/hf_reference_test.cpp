// End to end against Hugging Face transformers: each folder under tests/data/hf_ref (written by
// tools/hf_reference.py on the reference machine: a random BitNet checkpoint, 24 token ids and
// the W1.58A8 logits transformers computed for them, and float-activation logits of the script's
// float64 forward pass) is converted with `trit convert` and run with `trit logits`; the logits
// must agree with the references.
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

struct Agreement {
  double rel = 0, max_abs = 0, top1 = 0;
};

// Relative error (Frobenius), largest difference and top-1 agreement of got against ref.
Agreement compare(const std::vector<float>& got, const std::vector<float>& ref, int64_t n_tokens,
                  int64_t n_vocab) {
  double diff2 = 0, ref2 = 0;
  Agreement r;
  int64_t agree = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* a = got.data() + t * n_vocab;
    const float* b = ref.data() + t * n_vocab;
    int64_t arg_a = 0, arg_b = 0;
    for (int64_t v = 0; v < n_vocab; ++v) {
      EXPECT_TRUE(std::isfinite(a[v])) << "token " << t << " logit " << v << " is " << a[v];
      const double d = double(a[v]) - double(b[v]);
      diff2 += d * d;
      ref2 += double(b[v]) * double(b[v]);
      r.max_abs = std::max(r.max_abs, std::fabs(d));
      if (a[v] > a[arg_a]) arg_a = v;
      if (b[v] > b[arg_b]) arg_b = v;
    }
    agree += arg_a == arg_b;
  }
  r.rel = std::sqrt(diff2 / ref2);
  r.top1 = double(agree) / double(n_tokens);
  return r;
}

TEST_P(HfReference, LogitsMatchTransformers) {
  const RefCase& rc = GetParam();
  const std::string dir = std::string(TRIT_TEST_DATA) + "/hf_ref/" + rc.name;
  ASSERT_TRUE(fs::exists(dir + "/config.json")) << dir << " is missing: run tools/hf_reference.py";
  const std::string ids = trim(test::read_file(dir + "/ids.txt"));
  const nlohmann::json info = nlohmann::json::parse(test::read_file(dir + "/info.json"));
  const int64_t n_tokens = info.at("n_tokens").get<int64_t>();
  const int64_t n_vocab = info.at("n_vocab").get<int64_t>();

  test::TempDir tmp;
  const std::string gguf = tmp.file("model.gguf");
  const test::ShellResult conv =
      test::run_shell(test::trit_command({"convert", dir, "-o", gguf, "--type", rc.type}));
  ASSERT_EQ(conv.rc, 0) << conv.output;
  const char* dev = std::getenv("TRIT_TEST_DEVICE");
  const std::string device = dev && *dev ? dev : "cpu";
  // W1.58A8 against transformers; float activations against the script's float64 forward pass
  // (transformers always rounds activations to int8).
  for (const char* acts : {"int8", "none"}) {
    const bool int8 = std::strcmp(acts, "int8") == 0;
    const std::vector<float> ref =
        test::read_f32_file(dir + (int8 ? "/logits.f32" : "/logits_float.f32"));
    ASSERT_EQ(int64_t(ref.size()), n_tokens * n_vocab);
    const std::string out = tmp.file(std::string("logits_") + acts + ".f32");
    const test::ShellResult log = test::run_shell(test::trit_command(
        {"logits", "-m", gguf, "--ids", ids, "-o", out, "--device", device, "--act-quant", acts}));
    ASSERT_EQ(log.rc, 0) << log.output;
    const std::vector<float> got = test::read_f32_file(out);
    ASSERT_EQ(got.size(), ref.size()) << "expected " << n_tokens << " x " << n_vocab << " logits";
    const Agreement a = compare(got, ref, n_tokens, n_vocab);
    std::printf(
        "hf_ref %s --type %s --act-quant %s: rel err %.3e, max abs diff %.3e, top-1 "
        "agreement %.3f\n",
        rc.name, rc.type, acts, a.rel, a.max_abs, a.top1);
    // Int8 rounding that flips spreads through later layers (info.json's perturbation_rel_err);
    // with float activations only float32 rounding separates trit from the float64 pass.
    EXPECT_GE(a.top1, int8 ? 0.95 : 1.0) << acts;
    EXPECT_LE(a.rel, int8 ? 2e-2 : 1e-5) << acts;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, HfReference,
    ::testing::Values(RefCase{"relu2_tied", "tq2_0"}, RefCase{"relu2_tied", "tq1_0"},
                      RefCase{"relu2_tied", "i2_s"}, RefCase{"silu_untied", "tq2_0"},
                      RefCase{"packed", "tq2_0"}, RefCase{"llama_packed", "tq2_0"},
                      RefCase{"llama_packed", "i2_s"}, RefCase{"llama_online", "tq2_0"},
                      RefCase{"odd_widths", "tq2_0"}, RefCase{"odd_widths", "i2_s"}),
    [](const ::testing::TestParamInfo<RefCase>& info) {
      return std::string(info.param.name) + "_" + info.param.type;
    });

}  // namespace
}  // namespace trit::engine
