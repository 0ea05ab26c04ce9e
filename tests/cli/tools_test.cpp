// End-to-end tests of `trit create`, `info`, `quantize` and `devices`: the real binary, its
// exit codes, its output and its one-line errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/cli.h"
#include "support/errors.h"
#include "support/files.h"

namespace trit::engine {
namespace {

using test::expect_one_line_error;
using test::run_trit;
using test::RunResult;
using test::TempDir;

TEST(CliTools, CreateInfoQuantize) {
  TempDir dir;
  const std::string model = dir.file("tiny.gguf");
  RunResult r = run_trit(
      dir, {"create", "--preset", "tiny", "--random", "-o", model, "--layers", "3", "--seed", "5"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find(model), std::string::npos) << r.out;
  ASSERT_TRUE(test::file_exists(model));

  r = run_trit(dir, {"info", model, "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["hparams"]["n_layer"], 3);
  EXPECT_EQ(j["hparams"]["n_embd"], 256);
  EXPECT_EQ(j["file_type"], 37);
  EXPECT_EQ(j["tokenizer"]["vocab_size"], 512);
  EXPECT_GT(j["memory"]["run"]["total"].get<uint64_t>(), j["file_size"].get<uint64_t>() / 2);
  EXPECT_GT(j["memory"]["finetune"]["adapter"].get<uint64_t>(), 0u);
  // The estimates' settings from the command line; an unknown target is refused by name.
  r = run_trit(dir, {"info", model, "--json", "-c", "64", "--rank", "4", "--cache-type", "f16",
                     "--targets", "q,v"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json q = nlohmann::json::parse(r.out);
  EXPECT_EQ(q["memory"]["run"]["ctx"], 64);
  EXPECT_EQ(q["memory"]["run"]["cache_type"], "f16");
  // Halves at 64 positions against floats at the default context.
  const uint64_t default_ctx = j["memory"]["run"]["ctx"].get<uint64_t>();
  EXPECT_EQ(q["memory"]["run"]["kv_cache"].get<uint64_t>() * 2 * default_ctx,
            j["memory"]["run"]["kv_cache"].get<uint64_t>() * 64);
  EXPECT_EQ(q["memory"]["finetune"]["ctx"], 64);
  EXPECT_EQ(q["memory"]["finetune"]["rank"], 4);
  EXPECT_EQ(q["memory"]["finetune"]["targets"], "q,v");
  r = run_trit(dir, {"info", model, "--targets", "q,x"});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("'x'"), std::string::npos) << r.err;

  r = run_trit(dir, {"info", model, "--tensors"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("blk.2.ffn_down.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bitnet"), std::string::npos);

  const std::string i2s = dir.file("i2s.gguf");
  r = run_trit(dir, {"quantize", model, i2s, "i2_s"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_trit(dir, {"info", i2s, "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j2 = nlohmann::json::parse(r.out);
  EXPECT_EQ(j2["file_type"], 40);
  EXPECT_EQ(j2["hparams"]["n_layer"], 3);
  bool has_i2s = false;
  for (const auto& t : j2["types"]) has_i2s = has_i2s || t["type"] == "i2_s";
  EXPECT_TRUE(has_i2s);

  // Back to tq2_0: the same file as created.
  const std::string back = dir.file("back.gguf");
  r = run_trit(dir, {"quantize", i2s, back, "tq2_0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(test::read_file(back), test::read_file(model));

  r = run_trit(dir, {"quantize", model, model, "tq1_0"});
  expect_one_line_error(r, "tiny.gguf");
  r = run_trit(dir, {"quantize", model, dir.file("x.gguf"), "q4_0"});
  expect_one_line_error(r, "q4_0");
}

// A ternary Llama model through the CLI: `trit info` names the family and the activation and
// why; generation runs; --activation overrides and is checked.
TEST(CliTools, LlamaFamilyInfoAndActivationOverride) {
  TempDir dir;
  const std::string model = dir.file("llama.gguf");
  RunResult r = run_trit(dir, {"create", "--preset", "tiny", "--random", "--arch", "llama",
                               "--type", "i2_s", "-o", model});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_trit(dir, {"info", model});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "architecture:  llama");
  EXPECT_CONTAINS(r.out, "family:        Llama-architecture ternary");
  EXPECT_CONTAINS(r.out, "activation:    silu (a llama model's feed-forward is SiLU-gated)");
  r = run_trit(dir, {"info", model, "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["hparams"]["act"], "silu");
  EXPECT_NE(j["hparams"]["family"].get<std::string>().find("Llama"), std::string::npos);
  std::string logits[2];
  for (int i = 0; i < 2; ++i) {
    const std::string out = dir.file("logits" + std::to_string(i) + ".f32");
    std::vector<std::string> args = {"logits", "-m", model,      "--ids", "256,40,41,42",
                                     "-o",     out,  "--device", "cpu"};
    if (i == 1) args.insert(args.end(), {"--activation", "relu2"});
    r = run_trit(dir, args);
    ASSERT_EQ(r.rc, 0) << r.err;
    logits[i] = test::read_file(out);
    EXPECT_EQ(logits[i].size(), size_t(4 * 512 * 4));
  }
  EXPECT_NE(logits[0], logits[1]);  // another activation, another model
  r = run_trit(dir, {"generate", "-m", model, "-p", "x", "--activation", "gelu"});
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.err, "--activation: gelu not in {relu2,silu}");
  const std::string bitnet = dir.file("bitnet.gguf");
  ASSERT_EQ(run_trit(dir, {"create", "--preset", "tiny", "--random", "-o", bitnet}).rc, 0);
  r = run_trit(dir, {"info", bitnet});
  EXPECT_CONTAINS(r.out, "family:        BitNet b1.58");
  EXPECT_CONTAINS(r.out, "activation:    relu2 (from bitnet.hidden_activation)");
}

TEST(CliTools, CreateFromConfig) {
  TempDir dir;
  test::write_file(dir.file("cfg.json"),
                   R"({"n_vocab": 400, "n_embd": 256, "n_ff": 512, "n_layer": 2, "n_head": 4,
                       "n_head_kv": 1, "act": "silu", "tied": false})");
  const std::string model = dir.file("cfg.gguf");
  RunResult r = run_trit(dir, {"create", "--config", dir.file("cfg.json"), "--random", "-o", model,
                               "--type", "tq1_0", "--embd-type", "q8_0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_trit(dir, {"info", model, "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["hparams"]["n_vocab"], 400);
  EXPECT_EQ(j["hparams"]["n_head_kv"], 1);
  EXPECT_EQ(j["hparams"]["act"], "silu");
  EXPECT_EQ(j["hparams"]["tied_head"], false);
  EXPECT_EQ(j["file_type"], 36);
}

TEST(CliTools, BadInputsGiveOneLineErrors) {
  TempDir dir;
  const std::string missing = dir.file("no_such_model.gguf");
  expect_one_line_error(run_trit(dir, {"info", missing}), "no_such_model.gguf");

  test::write_file(dir.file("junk.gguf"), "this is not a gguf file at all");
  expect_one_line_error(run_trit(dir, {"info", dir.file("junk.gguf")}), "junk.gguf");
  expect_one_line_error(
      run_trit(dir, {"quantize", dir.file("junk.gguf"), dir.file("o.gguf"), "tq2_0"}), "junk.gguf");
  EXPECT_FALSE(test::file_exists(dir.file("o.gguf")));

  expect_one_line_error(
      run_trit(dir, {"create", "--preset", "huge", "--random", "-o", dir.file("m.gguf")}), "huge");
  expect_one_line_error(run_trit(dir, {"create", "--config", dir.file("none.json"), "--random",
                                       "-o", dir.file("m.gguf")}),
                        "none.json");
  expect_one_line_error(run_trit(dir, {"create", "--preset", "tiny", "--random", "-o",
                                       dir.file("m.gguf"), "--type", "f16"}),
                        "f16");
  EXPECT_FALSE(test::file_exists(dir.file("m.gguf")));
}

TEST(CliTools, Devices) {
  TempDir dir;
  // Mesa's drivers keep allocations that the Vulkan loader's unload makes unattributable, so
  // the leak checker of sanitizer builds is off for this process only.
  const RunResult r = run_trit(dir, {"devices"}, "ASAN_OPTIONS=detect_leaks=0");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("CPU:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernels:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("default device:"), std::string::npos) << r.out;
  // lavapipe (a cpu-type device) reports 128 MiB and is never the default.
  if (r.out.find("llvmpipe") != std::string::npos) {
    EXPECT_NE(r.out.find("maxStorageBufferRange 134217728 (128 MiB)"), std::string::npos) << r.out;
    if (r.out.find("type discrete") == std::string::npos &&
        r.out.find("type integrated") == std::string::npos) {
      EXPECT_NE(r.out.find("default device: cpu"), std::string::npos) << r.out;
    }
  }
}

}  // namespace
}  // namespace trit::engine
