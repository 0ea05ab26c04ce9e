// Checkpoint folders: written whole or not at all, a second checkpoint of the same step
// replaces the first in one rename (a reader sent to the folder by the first never finds it
// missing), and damage to any file is found by its checksum.
#include "train/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "io/adapter_gguf.h"
#include "support/adapters.h"
#include "support/errors.h"
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
  // A state.json without its checksum (as checkpoints before checksums were written) whose
  // numbers are out of range is refused naming the field.
  const std::string state = test::read_file(path + "/state.json");
  for (const auto& [key, value, why] :
       std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"step", -3, "'step' must be a non-negative integer, not -3"},
           {"step", 2.5, "'step' must be a non-negative integer, not 2.5"},
           {"index", 11, "'index' is 11, outside 0..10 (n_examples)"},
           {"epoch", -1, "'epoch' is -1, not a count"}}) {
    nlohmann::json j = nlohmann::json::parse(state);
    j.erase("digest");
    (key == "step" ? j["step"] : j["data"][key]) = value;
    test::write_file(path + "/state.json", j.dump());
    const std::string err = test::error_or_none([&] { (void)read_checkpoint(path); });
    EXPECT_NE(err.find(why), std::string::npos) << key << ": " << err;
  }
  test::write_file(path + "/state.json", state);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(ckpt)) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"checkpoint-2"});
  EXPECT_EQ(latest_checkpoint(ckpt), path);
}

// Flips bits of one byte of a file in place.
void flip_byte(const std::string& path, size_t at, char mask = 0x20) {
  std::string bytes = test::read_file(path);
  ASSERT_LT(at, bytes.size());
  bytes[at] = char(bytes[at] ^ mask);
  test::write_file(path, bytes);
}

// Every file of a checkpoint carries its size and checksum (state.json its own): a flipped
// byte or a truncated file is named, and the newest whole checkpoint is found past it.
TEST(Checkpoint, DamageIsFoundAndNamedAndTheNewestWholeOneIsUsed) {
  TempDir dir;
  const std::string ckpt = dir.file("run.checkpoints");
  const HParams hp = test::small_hparams();
  const LoraAdapter a = test::random_adapter(hp, {.targets = "q,v", .rank = 2, .seed = 3});
  AdamW opt;
  BatchState data;
  const std::string two = save_checkpoint(ckpt, 2, a, opt, data, {{"rank", 2}});
  const std::string four = save_checkpoint(ckpt, 4, a, opt, data, {{"rank", 2}});
  EXPECT_EQ(checkpoint_damage(four), "");

  auto damage_of = [&](const std::function<void()>& harm) {
    const std::string backup = dir.file("backup");
    fs::remove_all(backup);
    fs::copy(four, backup);
    harm();
    const std::string why = checkpoint_damage(four);
    fs::remove_all(four);
    fs::rename(backup, four);
    return why;
  };
  EXPECT_EQ(damage_of([&] { flip_byte(four + "/adapter.gguf", 100); }),
            four + "/adapter.gguf: its checksum does not match (the file is damaged)");
  const std::string truncated = damage_of([&] {
    const std::string bytes = test::read_file(four + "/optimizer.bin");
    test::write_file(four + "/optimizer.bin", bytes.substr(0, bytes.size() / 2));
  });
  EXPECT_NE(truncated.find(four + "/optimizer.bin: "), std::string::npos) << truncated;
  EXPECT_NE(truncated.find("(the file is truncated or damaged)"), std::string::npos) << truncated;
  // The step in state.json, 4 made 5: still JSON, but not what was written.
  const std::string state = test::read_file(four + "/state.json");
  EXPECT_EQ(
      damage_of([&] { flip_byte(four + "/state.json", state.find("\"step\": 4") + 8, 0x01); }),
      four + "/state.json: its checksum does not match (the file is damaged)");
  EXPECT_EQ(damage_of([&] { fs::remove(four + "/optimizer.bin"); }),
            four + "/optimizer.bin: missing");
  EXPECT_EQ(damage_of([&] { test::write_file(four + "/state.json", "{\"step\": "); }),
            four + "/state.json: not valid JSON (the file is damaged)");

  // read_checkpoint refuses a damaged folder naming the file; the newest whole one is found.
  flip_byte(four + "/adapter.gguf", 100);
  EXPECT_THROW(read_checkpoint(four), Error);
  std::vector<std::string> skipped;
  EXPECT_EQ(newest_good_checkpoint(ckpt, [&](const std::string& w) { skipped.push_back(w); }), two);
  EXPECT_EQ(skipped, std::vector<std::string>{four + "/adapter.gguf: its checksum does not match "
                                                     "(the file is damaged)"});
  flip_byte(two + "/optimizer.bin", 3);
  EXPECT_EQ(newest_good_checkpoint(ckpt, nullptr), "");
}

}  // namespace
}  // namespace trit::engine
