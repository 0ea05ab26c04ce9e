// `trit eval` through the binary: its JSON report against the library's evaluation, its text
// report, and a bad data file as one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "data/chat_template.h"
#include "infer/evaluate.h"
#include "model/model.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/models.h"

namespace trit::engine {
namespace {

using test::jsonl;
using test::run_trit;
using test::RunResult;
using test::TempDir;

TEST(EvalCli, JsonReportMatchesTheLibrary) {
  TempDir dir;
  const std::string path = test::create_model(dir, "m.gguf", test::tiny_options(21));
  auto model = Model::load(path);
  test::write_file(dir.file("qa.jsonl"), jsonl({{{"prompt", "2+2="}, {"completion", " four"}},
                                                {{"prompt", "sky: "}, {"completion", "blue"}}}));
  RunResult r = run_trit(dir, {"eval", "-m", path, "--data", dir.file("qa.jsonl"), "--mask-prompt",
                               "--json", "-t", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ThreadPool pool(2);
  CpuBackend cpu(pool);
  EvalOptions opt;
  opt.data.mask_prompt = true;
  const EvalResult e = evaluate_file(*model, dir.file("qa.jsonl"),
                                     ChatTemplate::for_model(model->file()), opt, cpu, {});
  EXPECT_EQ(j.at("kind"), "completions");
  EXPECT_EQ(j.at("target_tokens").get<int64_t>(), e.loss.n_targets);
  EXPECT_NEAR(j.at("loss").get<double>(), e.loss.mean_loss, 1e-12);
  EXPECT_NEAR(j.at("perplexity").get<double>(), e.loss.perplexity, 1e-9);
  EXPECT_EQ(j.at("exact_scored").get<int64_t>(), 2);
  EXPECT_EQ(j.at("exact_matched").get<int64_t>(), e.exact.n_matched);

  r = run_trit(dir, {"eval", "-m", path, "--data", dir.file("qa.jsonl")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("perplexity"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("exact match"), std::string::npos) << r.out;

  test::write_file(dir.file("bad.jsonl"), "{\"text\": 3}\n");
  r = run_trit(dir, {"eval", "-m", path, "--data", dir.file("bad.jsonl")});
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err.rfind("trit: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("bad.jsonl:1:"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace trit::engine
