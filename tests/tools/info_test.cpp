// tools/info: what `trit info` reports of a model file (summary, memory, JSON) and of a file of
// another architecture.
#include "tools/info.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "support/files.h"
#include "support/models.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::TempDir;

TEST(ModelInfo, SummaryAndJson) {
  TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  create_random_model(test::tiny_options(42, DType::TQ1_0), path);
  auto f = GgufFile::open(path);
  const ModelInfo info = read_model_info(*f);
  ASSERT_TRUE(info.hparams.has_value());
  EXPECT_EQ(info.hparams->n_layer, 2);
  EXPECT_EQ(info.tokenizer_model, "gpt2");
  EXPECT_EQ(info.tokenizer_vocab, 512);
  EXPECT_EQ(info.bos, 256);
  EXPECT_EQ(info.eos, 257);
  EXPECT_FALSE(info.chat_template);
  EXPECT_EQ(info.tensors.size(), f->tensors().size());
  // The estimates at the defaults: a run at the trained context (512) with an f32 cache, a
  // fine-tune at `trit finetune`'s (ctx 512, rank 8 on all).
  EXPECT_EQ(info.memory.run_ctx, 512);
  EXPECT_EQ(info.run.kv_cache, uint64_t(2 * 2 * 512 * 128 * 4));
  EXPECT_EQ(info.run.adapter, 0u);
  EXPECT_EQ(info.finetune.kv_cache, 0u);
  EXPECT_EQ(info.finetune.adapter,
            lora_parameters(*info.hparams, 8, "all") * 16);  // values, grads, two moments
  // TQ1_0 weights count at their own size (read in place, 54 bytes a block of 256).
  uint64_t ternary_bytes = 0;
  for (const TypeTotals& t : info.type_totals) {
    if (t.type == DType::TQ1_0) ternary_bytes = t.nbytes;
  }
  EXPECT_GT(ternary_bytes, 0u);
  EXPECT_EQ(info.run.weights, info.tensor_bytes);
  // A fine-tune streams its weights where that saves kStreamSavingBytes: two neighbouring
  // blocks (the head, here the tied embedding table, after the last) are resident at once;
  // this model's blocks are alike, and so small that every block stays.
  uint64_t block0 = 0, blocks = 0, head = 0;
  for (const TensorSummary& t : info.tensors) {
    if (t.name.starts_with("blk.0.")) block0 += t.nbytes;
    if (t.name.starts_with("blk.")) blocks += t.nbytes;
    if (t.name == "token_embd.weight") head = t.nbytes;
  }
  EXPECT_GT(block0, 0u);
  const uint64_t pair = std::max(2 * block0, block0 + head);
  EXPECT_EQ(info.finetune.weights, blocks + head);
  EXPECT_FALSE(info.finetune_streams);
  EXPECT_EQ(finetune_weight_bytes(blocks + head, pair), blocks + head);
  EXPECT_EQ(finetune_weight_bytes(pair + kStreamSavingBytes, pair), pair);
  EXPECT_EQ(finetune_weight_bytes(pair + kStreamSavingBytes - 1, pair),
            pair + kStreamSavingBytes - 1);
  // Another query: an f16 cache halves the cache, a rank twice as high doubles the adapter.
  MemoryQuery q;
  q.run_ctx = 100;
  q.kv = KvType::F16;
  q.rank = 16;
  const ModelInfo other = read_model_info(*f, q);
  EXPECT_EQ(other.run.kv_cache, uint64_t(2 * 2 * 100 * 128 * 2));
  EXPECT_EQ(other.finetune.adapter, 2 * info.finetune.adapter);

  const nlohmann::json j = nlohmann::json::parse(model_info_json(info, true));
  EXPECT_EQ(j["hparams"]["n_layer"], 2);
  EXPECT_EQ(j["architecture"], "bitnet");
  EXPECT_EQ(j["tensors"].size(), f->tensors().size());
  EXPECT_EQ(j["tokenizer"]["vocab_size"], 512);
  EXPECT_EQ(j["memory"]["run"]["total"], info.run.total());
  EXPECT_EQ(j["memory"]["finetune"]["adapter"], info.finetune.adapter);
  EXPECT_EQ(j["memory"]["finetune"]["rank"], 8);
  const std::string text = format_model_info(info, true);
  EXPECT_NE(text.find("blk.1.ffn_down.weight"), std::string::npos);
  EXPECT_NE(format_model_info(info, false).find("tq1_0"), std::string::npos);
  EXPECT_NE(text.find("to fine-tune (ctx 512, LoRA rank 8 on all"), std::string::npos) << text;
}

TEST(ModelInfo, OtherArchitecture) {
  TempDir dir;
  std::vector<float> x(64, 1.0f);
  {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 7);
    w.add_tensor("x", DType::F32, {64}, x.data());
    w.write(dir.file("llama.gguf"));
  }
  auto f = GgufFile::open(dir.file("llama.gguf"));
  const ModelInfo info = read_model_info(*f);
  EXPECT_FALSE(info.hparams.has_value());
  EXPECT_EQ(info.arch, "llama");
  const std::string text = format_model_info(info, false);
  EXPECT_NE(text.find("llama.block_count = 7"), std::string::npos) << text;
  const nlohmann::json j = nlohmann::json::parse(model_info_json(info, false));
  EXPECT_TRUE(j["hparams"].is_null());
  EXPECT_EQ(j["n_tensors"], 1);
}

}  // namespace
}  // namespace trit::engine
