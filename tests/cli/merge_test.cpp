// `trit merge` through the binary: merged and attached models give the logits of --lora, and
// errors are one line naming the file.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "io/adapter_gguf.h"
#include "model/model.h"
#include "support/adapters.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"

namespace trit::engine {
namespace {

using test::random_adapter;
using test::run_trit;
using test::RunResult;
using test::TempDir;

TEST(MergeCli, MergedModelsGiveTheLogitsOfLora) {
  TempDir dir;
  const std::string base_path = test::create_model(dir, "m.gguf", test::tiny_options(5));
  auto base = Model::load(base_path);
  save_adapter_gguf(random_adapter(base->hparams(),
                                   {.targets = "all,head", .rank = 4, .alpha = 8.0f, .seed = 11}),
                    dir.file("a.gguf"));
  const std::string lora = dir.file("a.gguf") + ":0.5";
  RunResult r = run_trit(dir, {"merge", "-m", base_path, "--lora", lora, "-o",
                               dir.file("attach.gguf"), "--mode", "attach", "-t", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("attach.gguf"), std::string::npos) << r.out;
  r = run_trit(dir, {"merge", "-m", base_path, "--lora", lora, "-o", dir.file("float.gguf"),
                     "--type", "f32", "-t", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;

  auto logits = [&](const std::vector<std::string>& extra, const std::string& out) {
    std::vector<std::string> args = {"logits", "--ids", "256,5,70,300", "-o", out, "-t", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult lr = run_trit(dir, args);
    EXPECT_EQ(lr.rc, 0) << lr.err;
    return test::read_f32_file(out);
  };
  for (const std::string act : {"int8", "none"}) {
    SCOPED_TRACE(act);
    const auto with_lora =
        logits({"-m", base_path, "--lora", lora, "--act-quant", act}, dir.file("l1.bin"));
    EXPECT_EQ(logits({"-m", dir.file("attach.gguf"), "--act-quant", act}, dir.file("l2.bin")),
              with_lora);
    if (act == "none") {
      EXPECT_LT(test::rel_l2(logits({"-m", dir.file("float.gguf")}, dir.file("l3.bin")), with_lora),
                2e-6);
    }
  }
  // An attached model takes further adapters on top.
  const auto twice = logits({"-m", base_path, "--lora", lora, "--lora", lora}, dir.file("l4.bin"));
  EXPECT_EQ(logits({"-m", dir.file("attach.gguf"), "--lora", lora}, dir.file("l5.bin")), twice);
}

TEST(MergeCli, ErrorsAreOneLineNamingTheFile) {
  TempDir dir;
  const std::string base_path = test::create_model(dir, "m.gguf", test::tiny_options(5));
  const RunResult r = run_trit(
      dir, {"merge", "-m", base_path, "--lora", dir.file("nope.gguf"), "-o", dir.file("o.gguf")});
  test::expect_one_line_error(r, "nope.gguf");
  EXPECT_FALSE(test::file_exists(dir.file("o.gguf")));
  EXPECT_FALSE(test::file_exists(dir.file("o.gguf.tmp")));
}

}  // namespace
}  // namespace trit::engine
