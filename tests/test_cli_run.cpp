// End-to-end tests of the commands that run a model, on a small random model.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "infer/session.h"
#include "tools/create.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

struct CmdResult {
  int code;
  std::string out;  // stdout and stderr
};

CmdResult run(const std::string& args) {
  const std::string cmd = std::string(TRIT_BIN) + " " + args + " 2>&1";
  CmdResult r{0, ""};
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class CliRun : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions o;
    o.hp = *hparams_preset("tiny");
    o.seed = 11;
    model_ = dir_.file("tiny.gguf");
    create_random_model(o, model_);
  }
  test::TempDir dir_;
  std::string model_;
};

TEST_F(CliRun, LogitsFileHoldsEveryPositionAndMatchesTheLibrary) {
  const std::string out = dir_.file("l.f32");
  CmdResult r = run("logits -m " + model_ + " --ids 1,5,9,300 -o " + out + " -t 1");
  ASSERT_EQ(r.code, 0) << r.out;
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
  CmdResult r = run("logits -m " + model_ + " --ids 1,x,3 -o " + dir_.file("o"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("trit: --ids: 'x' is not a token id"), std::string::npos) << r.out;
  r = run("logits -m " + model_ + " --ids 1,99999 -o " + dir_.file("o"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("token id 99999 is out of range"), std::string::npos) << r.out;
  EXPECT_FALSE(test::file_exists(dir_.file("o")));
}

TEST_F(CliRun, MissingModelNamesTheFile) {
  CmdResult r = run("generate -m " + dir_.file("nope.gguf") + " -p hi -n 2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("nope.gguf"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line expected: " << r.out;
}

TEST_F(CliRun, GenerateGreedyIsDeterministicAndReportsSpeed) {
  CmdResult a = run("generate -m " + model_ + " -p hello -n 12 --temp 0");
  CmdResult b = run("generate -m " + model_ + " -p hello -n 12 --temp 0 -t 1");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(a.out.find("tokens/s"), std::string::npos);
  EXPECT_EQ(a.out.substr(0, a.out.find("trit: prompt")),
            b.out.substr(0, b.out.find("trit: prompt")));
  CmdResult ids = run("generate -m " + model_ + " --ids 256,104,105 -n 4 --temp 0.7 -s 5");
  EXPECT_EQ(ids.code, 0) << ids.out;
}

TEST_F(CliRun, PerplexityOfAFileMatchesLogitsComputedHere) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  test::write_file(dir_.file("t.txt"), text);
  CmdResult r = run("perplexity -m " + model_ + " -f " + dir_.file("t.txt") + " -c 64");
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t at = r.out.find("\nperplexity ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double ppl = std::stod(r.out.substr(at + 12));

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
  const std::string cmd = "printf 'hi\\nhow are you\\n' | " + std::string(TRIT_BIN) + " chat -m " +
                          model_ + " -n 5 --temp 0 --chat-template chatml 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("chat template chatml"), std::string::npos) << out;
}

TEST_F(CliRun, BenchPrintsJson) {
  CmdResult r = run("bench -m " + model_ + " -p 16 -n 8 -r 1 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"tg_tokens_per_s\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"peak_rss_mib\""), std::string::npos) << r.out;
}

TEST_F(CliRun, UnknownDeviceIsRefused) {
  CmdResult r = run("generate -m " + model_ + " -p hi -n 2 --device tpu");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("unknown device"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace trit::engine
