// Checkpoint folders: written whole or not at all, and a second checkpoint of the same step
// replaces the first in one rename (a reader sent to the folder by the first never finds it
// missing).
#include "train/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "io/adapter_gguf.h"
#include "support/adapters.h"
#include "support/files.h"
#include "train/optimizer.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

TEST(Checkpoint, TheSameStepWrittenAgainReplacesTheFolderWhole) {
  TempDir dir;
  const std::string ckpt = dir.file("run.checkpoints");
  const HParams hp = test::small_hparams();
  const LoraAdapter first = test::random_adapter(hp, {.targets = "q,v", .rank = 2, .seed = 3});
  const LoraAdapter second = test::random_adapter(hp, {.targets = "q,v", .rank = 2, .seed = 4});
  AdamW opt;
  BatchState data;
  data.n_examples = 10;
  const nlohmann::json settings = {{"rank", 2}};

  const std::string path = save_checkpoint(ckpt, 2, first, opt, data, settings);
  EXPECT_EQ(path, ckpt + "/checkpoint-2");
  const std::string first_bytes = test::read_file(path + "/adapter.gguf");
  data.index = 5;
  EXPECT_EQ(save_checkpoint(ckpt, 2, second, opt, data, settings), path);

  // The second one's files, and nothing left beside the folder.
  save_adapter_gguf(second, dir.file("second.gguf"));
  EXPECT_EQ(test::read_file(path + "/adapter.gguf"), test::read_file(dir.file("second.gguf")));
  EXPECT_NE(test::read_file(path + "/adapter.gguf"), first_bytes);
  EXPECT_EQ(read_checkpoint(path).data_state.index, 5);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(ckpt)) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"checkpoint-2"});
  EXPECT_EQ(latest_checkpoint(ckpt), path);
}

}  // namespace
}  // namespace trit::engine
