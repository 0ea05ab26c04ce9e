// End-to-end tests of `trit convert` on PEFT adapter folders and `trit export-peft`: the real
// binary, its exit codes, one-line errors, and no partial output on failure.
#include "support/adapters.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/lora.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "model/hparams.h"
#include "model/lora_set.h"
#include "support/cli.h"
#include "support/files.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;
using test::expect_one_line_error;
using test::random_adapter;
using test::run_trit;
using test::RunResult;
using test::TempDir;

// The names in a folder, to check that a failed command left nothing behind.
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

HParams tiny_hp(int64_t layers) {
  HParams hp = *hparams_preset("tiny");
  hp.n_layer = layers;
  return hp;
}

TEST(CliAdapters, ConvertPeftAndExportBack) {
  TempDir logs, work;
  const HParams hp = tiny_hp(2);
  const LoraAdapter a = random_adapter(hp, {.targets = "q,v,down,head", .alpha = 8.0f, .seed = 5});
  const std::string peft = work.file("peft");
  save_peft(a, peft);

  // Without --base: architecture "bitnet", shapes unchecked.
  const std::string gguf = work.file("a.gguf");
  RunResult r = run_trit(logs, {"convert", peft, "-o", gguf});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find(gguf), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("7 layers"), std::string::npos) << r.err;
  const LoraAdapter g = load_adapter_gguf(gguf);
  test::expect_same_adapter(a, g);
  EXPECT_EQ(g.base_arch, "bitnet");

  // export-peft gives the same adapter back.
  const std::string back = work.file("back");
  r = run_trit(logs, {"export-peft", gguf, "-o", back});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find(back), std::string::npos) << r.err;
  test::expect_same_adapter(a, load_peft(back));
  EXPECT_TRUE(test::file_exists(back + "/adapter_config.json"));

  // f16 tensors on request.
  r = run_trit(logs, {"convert", peft, "-o", work.file("h.gguf"), "--type", "f16"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto f = GgufFile::open(work.file("h.gguf"));
  for (const GgufTensor& t : f->tensors()) EXPECT_EQ(t.type, DType::F16) << t.name;
}

TEST(CliAdapters, ConvertWithBase) {
  TempDir logs, work;
  const std::string model = work.file("m.gguf");
  RunResult r = run_trit(logs, {"create", "--preset", "tiny", "--random", "-o", model, "--layers",
                                "2", "--seed", "3"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const HParams hp = HParams::from_gguf(*GgufFile::open(model));

  const std::string peft = work.file("peft");
  save_peft(random_adapter(hp, {.targets = "all,head", .alpha = 8.0f, .seed = 9}), peft);
  const std::string out = work.file("a.gguf");
  r = run_trit(logs, {"convert", peft, "-o", out, "--base", model});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("checked against"), std::string::npos) << r.err;
  const LoraAdapter g = load_adapter_gguf(out);
  EXPECT_EQ(g.base_arch, hp.arch);
  check_adapter_against(g, hp, model);

  // An adapter for a three-block model does not fit: one line naming the layer, no output.
  const std::string peft3 = work.file("peft3");
  save_peft(random_adapter(tiny_hp(3), {.targets = "q", .alpha = 8.0f, .seed = 1}), peft3);
  const std::vector<std::string> before = listing(work.path());
  r = run_trit(logs, {"convert", peft3, "-o", work.file("b.gguf"), "--base", model});
  expect_one_line_error(r, "blk.2.attn_q.weight");
  EXPECT_NE(r.err.find(model), std::string::npos) << r.err;
  EXPECT_EQ(listing(work.path()), before);

  // Another model size: names the layer and both shapes.
  HParams wide = hp;
  wide.n_ff = 1024;
  const std::string peftw = work.file("peftw");
  save_peft(random_adapter(wide, {.targets = "up", .alpha = 8.0f, .seed = 1}), peftw);
  const std::vector<std::string> before_w = listing(work.path());
  r = run_trit(logs, {"convert", peftw, "-o", work.file("b.gguf"), "--base", model});
  expect_one_line_error(r, "blk.0.ffn_up.weight");
  EXPECT_EQ(listing(work.path()), before_w);
}

TEST(CliAdapters, ErrorsAreOneLineAndLeaveNothing) {
  TempDir logs, work;
  const HParams hp = tiny_hp(1);
  const std::string peft = work.file("peft");
  save_peft(random_adapter(hp, {.targets = "q", .alpha = 8.0f, .seed = 2}), peft);

  // A per-module rank in the config.
  nlohmann::json c = nlohmann::json::parse(test::read_file(peft + "/adapter_config.json"));
  c["rank_pattern"] = {{"q_proj", 8}};
  const std::string bad = work.file("bad");
  fs::create_directory(bad);
  fs::copy_file(peft + "/adapter_model.safetensors", bad + "/adapter_model.safetensors");
  test::write_file(bad + "/adapter_config.json", c.dump());
  std::vector<std::string> before = listing(work.path());
  RunResult r = run_trit(logs, {"convert", bad, "-o", work.file("x.gguf")});
  expect_one_line_error(r, "rank_pattern");
  EXPECT_NE(r.err.find("adapter_config.json"), std::string::npos) << r.err;
  EXPECT_EQ(listing(work.path()), before);

  // A type that is not an adapter type.
  r = run_trit(logs, {"convert", peft, "-o", work.file("x.gguf"), "--type", "tq2_0"});
  expect_one_line_error(r, "--type");
  // --embd-type makes no sense for an adapter; --base none for a model folder.
  r = run_trit(logs, {"convert", peft, "-o", work.file("x.gguf"), "--embd-type", "f32"});
  expect_one_line_error(r, "--embd-type");
  r = run_trit(logs, {"convert", work.path(), "-o", work.file("x.gguf"), "--base", "m.gguf"});
  expect_one_line_error(r, "--base");
  EXPECT_EQ(listing(work.path()), before);

  // --base that is not a model.
  const std::string gguf = work.file("a.gguf");
  save_adapter_gguf(random_adapter(hp, {.targets = "q", .alpha = 8.0f, .seed = 2}), gguf);
  before = listing(work.path());
  r = run_trit(logs, {"convert", peft, "-o", work.file("x.gguf"), "--base", gguf});
  expect_one_line_error(r, gguf);
  EXPECT_EQ(listing(work.path()), before);

  // export-peft of a model rather than an adapter.
  const std::string model = work.file("m.gguf");
  r = run_trit(logs, {"create", "--preset", "tiny", "--random", "-o", model, "--layers", "1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  before = listing(work.path());
  r = run_trit(logs, {"export-peft", model, "-o", work.file("out")});
  expect_one_line_error(r, "general.type");
  EXPECT_NE(r.err.find(model), std::string::npos) << r.err;
  EXPECT_EQ(listing(work.path()), before);

  // export-peft into a folder that holds other files: refused, the folder untouched.
  const std::string mine = work.file("mine");
  fs::create_directory(mine);
  test::write_file(mine + "/notes.txt", "keep");
  before = listing(work.path());
  r = run_trit(logs, {"export-peft", gguf, "-o", mine});
  expect_one_line_error(r, "notes.txt");
  EXPECT_EQ(listing(mine), std::vector<std::string>{"notes.txt"});
  EXPECT_EQ(listing(work.path()), before);

  // A missing adapter file.
  r = run_trit(logs, {"export-peft", work.file("none.gguf"), "-o", work.file("out")});
  expect_one_line_error(r, "none.gguf");
  EXPECT_FALSE(test::file_exists(work.file("out")));
}

}  // namespace
}  // namespace trit::engine
