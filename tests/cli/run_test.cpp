// End-to-end tests of the commands that run a model, on a small random model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "infer/session.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "support/vulkan.h"
#include "tokenizer/tokenizer.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

// Runs trit with the arguments (one string, split by the shell); stdout and stderr together.
test::ShellResult run(const std::string& args) {
  // Appended, not `std::string(TRIT_BIN) + " " + args`: GCC 12 warns (-Warray-bounds) on the
  // inlined copy of that temporary, wrongly (GCC bug 105651).
  std::string command = TRIT_BIN;
  command += ' ';
  command += args;
  return test::run_shell(command);
}

class CliRun : public ::testing::Test {
 protected:
  void SetUp() override { model_ = test::create_model(dir_, "tiny.gguf", test::tiny_options(11)); }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(CliRun, LogitsFileHoldsEveryPositionAndMatchesTheLibrary) {
  const std::string out = dir_.file("l.f32");
  test::ShellResult r = run("logits -m " + model_ + " --ids 1,5,9,300 -o " + out + " -t 1");
  ASSERT_EQ(r.rc, 0) << r.output;
  const std::string bytes = test::read_file(out);
  auto model = Model::load(model_);
  const int64_t V = model->hparams().n_vocab;
  ASSERT_EQ(bytes.size(), size_t(4 * V) * sizeof(float));
  ThreadPool pool(1);
  Session s(*model, 4, pool);
  std::vector<float> expected;
  s.eval({1, 5, 9, 300}, expected, true);
  EXPECT_EQ(0, std::memcmp(bytes.data(), expected.data(), bytes.size()));
}

TEST_F(CliRun, LogitsRejectsBadIdsWithOneLine) {
  test::ShellResult r = run("logits -m " + model_ + " --ids 1,x,3 -o " + dir_.file("o"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("trit: --ids: 'x' is not a token id"), std::string::npos) << r.output;
  r = run("logits -m " + model_ + " --ids 1,99999 -o " + dir_.file("o"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("token id 99999 is out of range"), std::string::npos) << r.output;
  EXPECT_FALSE(test::file_exists(dir_.file("o")));
}

TEST_F(CliRun, MissingModelNamesTheFile) {
  test::ShellResult r = run("generate -m " + dir_.file("nope.gguf") + " -p hi -n 2");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("nope.gguf"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "one line expected: " << r.output;
}

TEST_F(CliRun, GenerateGreedyIsDeterministicAndReportsSpeed) {
  test::ShellResult a = run("generate -m " + model_ + " -p hello -n 12 --temp 0");
  test::ShellResult b = run("generate -m " + model_ + " -p hello -n 12 --temp 0 -t 1");
  ASSERT_EQ(a.rc, 0) << a.output;
  ASSERT_EQ(b.rc, 0) << b.output;
  EXPECT_NE(a.output.find("tokens/s"), std::string::npos);
  EXPECT_EQ(a.output.substr(0, a.output.find("trit: prompt")),
            b.output.substr(0, b.output.find("trit: prompt")));
  test::ShellResult ids = run("generate -m " + model_ + " --ids 256,104,105 -n 4 --temp 0.7 -s 5");
  EXPECT_EQ(ids.rc, 0) << ids.output;
}

TEST_F(CliRun, LogitBiasIsParsedAsLlamaCppWritesIt) {
  // ID+BIAS, ID-BIAS and ID-inf, repeated (Serve.PenaltiesMatchGenerate checks their effect);
  // anything else, and ids outside the vocabulary, refused naming the flag or the field.
  for (const char* bad : {"5x", "x+1", "+1", "5", "5+", "5+inf", "-3+1"}) {
    test::ShellResult r =
        run("generate -m " + model_ + " -p hi -n 2 --logit-bias " + std::string(bad));
    EXPECT_NE(r.rc, 0) << bad;
    EXPECT_NE(r.output.find("--logit-bias: expected TOKEN_ID+BIAS"), std::string::npos)
        << bad << ": " << r.output;
  }
  test::ShellResult out = run("generate -m " + model_ + " -p hi -n 2 --logit-bias 99999+1");
  EXPECT_NE(out.rc, 0);
  EXPECT_NE(out.output.find("logit_bias: token 99999 is outside the vocabulary"), std::string::npos)
      << out.output;
  test::ShellResult fine =
      run("generate -m " + model_ + " -p hi -n 2 --logit-bias 5+1.5 -l 6-2.25 -l 7-inf");
  EXPECT_EQ(fine.rc, 0) << fine.output;
}

TEST_F(CliRun, PerplexityOfAFileMatchesLogitsComputedHere) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  test::write_file(dir_.file("t.txt"), text);
  test::ShellResult r = run("perplexity -m " + model_ + " -f " + dir_.file("t.txt") + " -c 64");
  ASSERT_EQ(r.rc, 0) << r.output;
  const size_t at = r.output.find("\nperplexity ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const double ppl = std::stod(r.output.substr(at + 12));

  // Independently: chunks of 64 tokens, every prediction inside a chunk scored.
  auto model = Model::load(model_);
  const Tokenizer& tok = *model->tokenizer();
  const std::vector<int32_t> ids = tok.encode(text, tok.add_bos_default(), false);
  const int64_t V = model->hparams().n_vocab, n_chunks = int64_t(ids.size()) / 64;
  ASSERT_GT(n_chunks, 0);
  ThreadPool pool(1);
  double nll = 0;
  int64_t n = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    Session s(*model, 64, pool);
    std::vector<float> logits;
    s.eval({ids.begin() + c * 64, ids.begin() + (c + 1) * 64}, logits, true);
    for (int64_t t = 0; t + 1 < 64; ++t) {
      const float* row = logits.data() + t * V;
      double m = row[0], z = 0;
      for (int64_t i = 0; i < V; ++i) m = std::max(m, double(row[i]));
      for (int64_t i = 0; i < V; ++i) z += std::exp(double(row[i]) - m);
      nll += m + std::log(z) - row[ids[size_t(c * 64 + t + 1)]];
      ++n;
    }
  }
  EXPECT_NEAR(ppl, std::exp(nll / double(n)), 1e-3 * std::exp(nll / double(n)));
}

TEST_F(CliRun, ChatReadsTurnsFromStdin) {
  const test::ShellResult r =
      test::run_shell("printf 'hi\\nhow are you\\n' | " + std::string(TRIT_BIN) + " chat -m " +
                      model_ + " -n 5 --temp 0 --chat-template chatml");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("chat template chatml"), std::string::npos) << r.output;
}

TEST_F(CliRun, BenchPrintsJson) {
  test::ShellResult r = run("bench -m " + model_ + " -p 16 -n 8 -r 1 --json");
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("\"tg_tokens_per_s\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"peak_rss_mib\""), std::string::npos) << r.output;
}

// --mem-budget: a budget below the model's size streams its weights and gives the same
// logits; one too small is refused naming the smallest that works; on a GPU the blocks stream
// through the device with the same logits.
TEST_F(CliRun, MemoryBudgetStreamsOrIsRefusedClearly) {
  CreateOptions o = test::tiny_options(12, DType::TQ1_0);
  o.hp.n_layer = 12;
  const std::string deep = test::create_model(dir_, "deep.gguf", o);
  auto model = Model::load(deep);
  const int64_t least = int64_t((model->min_stream_bytes() + (1 << 20) - 1) >> 20);
  model->set_mem_budget(uint64_t(least) << 20);
  ASSERT_TRUE(model->streaming()) << least << " MiB";
  const std::string logits = "logits -m " + deep + " --device cpu -t 2 --ids 1,5,9,300,7 -o ";
  test::ShellResult r = run(logits + dir_.file("plain.f32"));
  ASSERT_EQ(r.rc, 0) << r.output;
  r = run(logits + dir_.file("streamed.f32") + " --mem-budget " + std::to_string(least));
  ASSERT_EQ(r.rc, 0) << r.output;
  const std::string plain = test::read_file(dir_.file("plain.f32"));
  EXPECT_FALSE(plain.empty());
  EXPECT_TRUE(plain == test::read_file(dir_.file("streamed.f32")));
  r = run("bench -m " + deep + " --device cpu -p 8 -n 4 -r 1 --mem-budget " +
          std::to_string(least - 1));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("the smallest that works is " + std::to_string(least) + " MiB"),
            std::string::npos)
      << r.output;
  // On a GPU the blocks stream through the device (each uploaded for its pass, dropped after
  // it): the logits of the run without a budget, bit for bit.
  const std::string vk = "logits -m " + deep + " --device vulkan --ids 1,5,9,300,7 -o ";
  r = run(vk + dir_.file("vk.f32"));
  if (r.rc != 0 && test::says_no_device(r.output) && !test::vulkan_required()) return;
  ASSERT_EQ(r.rc, 0) << r.output;
  r = run(vk + dir_.file("vk_streamed.f32") + " --mem-budget " + std::to_string(least));
  ASSERT_EQ(r.rc, 0) << r.output;
  const std::string on_device = test::read_file(dir_.file("vk.f32"));
  EXPECT_FALSE(on_device.empty());
  EXPECT_TRUE(on_device == test::read_file(dir_.file("vk_streamed.f32")));
}

// --cache-type f16: the logits of a prompt stay within the f32 cache's bound (KvCache tests),
// differ from them, and a type other than f32 or f16 is refused by name.
TEST_F(CliRun, CacheTypeF16IsCloseToF32AndOthersAreRefused) {
  const std::string logits = "logits -m " + model_ + " -t 1 --ids 1,5,9,300,7,8,200 -o ";
  test::ShellResult r = run(logits + dir_.file("f32.f32"));
  ASSERT_EQ(r.rc, 0) << r.output;
  r = run(logits + dir_.file("f16.f32") + " --cache-type f16");
  ASSERT_EQ(r.rc, 0) << r.output;
  const std::string a = test::read_file(dir_.file("f32.f32")),
                    b = test::read_file(dir_.file("f16.f32"));
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_NE(a, b);
  std::vector<float> fa(a.size() / 4), fb(b.size() / 4);
  std::memcpy(fa.data(), a.data(), a.size());
  std::memcpy(fb.data(), b.data(), b.size());
  test::expect_logits_close(fa, fb, int64_t(fa.size() / 7), 2e-2, "--cache-type f16");
  r = run("generate -m " + model_ + " -p hi -n 2 --cache-type q4_0");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("--cache-type"), std::string::npos) << r.output;
}

TEST_F(CliRun, UnknownDeviceIsRefused) {
  test::ShellResult r = run("generate -m " + model_ + " -p hi -n 2 --device tpu");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("unknown device"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace trit::engine
