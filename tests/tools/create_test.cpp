// tools/create: random models of every type read back through GgufFile, determinism, the
// byte-level tokenizer, shapes from config files, and the shapes it refuses.
#include "tools/create.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "io/gguf.h"
#include "model/hparams.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/models.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::TempDir;

void expect_same_hparams(const HParams& a, const HParams& b) {
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_ff, b.n_ff);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_head, b.n_head);
  EXPECT_EQ(a.n_head_kv, b.n_head_kv);
  EXPECT_EQ(a.n_ctx_train, b.n_ctx_train);
  EXPECT_EQ(a.rope_dim, b.rope_dim);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rms_eps, b.rms_eps);
  EXPECT_EQ(a.act, b.act);
  EXPECT_EQ(a.tied_head, b.tied_head);
}

// Every tensor a model of these hyperparameters must hold, with type and shape.
struct Expected {
  std::string name;
  DType type;
  std::vector<int64_t> ne;
};
std::vector<Expected> expected_tensors(const HParams& hp, DType type, DType embd) {
  std::vector<Expected> e;
  e.push_back({"token_embd.weight", embd, {hp.n_embd, hp.n_vocab}});
  e.push_back({"output_norm.weight", DType::F32, {hp.n_embd}});
  if (!hp.tied_head) e.push_back({"output.weight", embd, {hp.n_embd, hp.n_vocab}});
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (const char* norm : {"attn_norm", "attn_sub_norm", "ffn_norm"}) {
      e.push_back({block_tensor_name(l, norm), DType::F32, {hp.n_embd}});
    }
    e.push_back({block_tensor_name(l, "ffn_sub_norm"), DType::F32, {hp.n_ff}});
    for (const std::string& what : block_linear_names()) {
      const auto [n_in, n_out] = block_linear_shape(hp, what);
      e.push_back({block_tensor_name(l, what), type, {n_in, n_out}});
    }
  }
  return e;
}

void expect_tensors(const GgufFile& f, const HParams& hp, DType type, DType embd) {
  const auto expected = expected_tensors(hp, type, embd);
  EXPECT_EQ(f.tensors().size(), expected.size());
  for (const Expected& e : expected) {
    const GgufTensor* t = f.find_tensor(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->type, e.type) << e.name;
    EXPECT_EQ(t->ne, e.ne) << e.name;
  }
}

class CreateEachType : public ::testing::TestWithParam<DType> {};

TEST_P(CreateEachType, TinyModelReadsBack) {
  TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  const CreateOptions opt = test::tiny_options(42, GetParam());
  const CreateResult r = create_random_model(opt, path);
  EXPECT_GT(r.file_bytes, 0u);
  EXPECT_FALSE(test::file_exists(path + ".tmp"));

  auto f = GgufFile::open(path);
  EXPECT_EQ(r.file_bytes, f->file_size());
  expect_same_hparams(HParams::from_gguf(*f), opt.hp);
  EXPECT_EQ(f->get_u32("general.file_type"), file_type_for(GetParam()));
  EXPECT_EQ(f->get_u32("general.alignment"), 32u);
  EXPECT_EQ(f->get_string("general.name"), "trit-random");
  expect_tensors(*f, opt.hp, GetParam(), DType::F16);

  // Trits in {-1, 0, 1}, one scale 1/sqrt(n_in) (as fp16) everywhere.
  for (int64_t l = 0; l < opt.hp.n_layer; ++l) {
    for (const std::string& what : block_linear_names()) {
      const GgufTensor& t = f->tensor(block_tensor_name(l, what));
      const TernaryUnpacked u = unpack_ternary(t.type, t.data, t.n_elements());
      ASSERT_EQ(int64_t(u.trits.size()), t.n_elements());
      for (int8_t v : u.trits) ASSERT_TRUE(v >= -1 && v <= 1);
      const float d = fp16_to_f32(f32_to_fp16(1.0f / std::sqrt(float(t.ne[0]))));
      for (float s : u.block_scales) ASSERT_EQ(s, d) << t.name;
    }
  }

  // Roughly uniform codes over a big tensor (196608 weights: each share is 33.3% +- 0.1%).
  const GgufTensor& up = f->tensor(block_tensor_name(1, "ffn_up"));
  const TernaryUnpacked u = unpack_ternary(up.type, up.data, up.n_elements());
  int64_t count[3] = {0, 0, 0};
  for (int8_t v : u.trits) ++count[v + 1];
  for (int64_t c : count) {
    const double share = double(c) / double(u.trits.size());
    EXPECT_GT(share, 0.25);
    EXPECT_LT(share, 0.42);
  }

  // Embedding rows around normal(0, 0.5); norms near 1.
  const GgufTensor& emb = f->tensor("token_embd.weight");
  std::vector<float> x(size_t(emb.n_elements()));
  dequantize(emb.type, emb.data, emb.n_elements(), x.data());
  double sum = 0, sum2 = 0;
  for (float v : x) {
    sum += v;
    sum2 += double(v) * v;
  }
  const double mean = sum / double(x.size());
  const double sd = std::sqrt(sum2 / double(x.size()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(sd, 0.5, 0.02);
  const GgufTensor& norm = f->tensor("blk.0.attn_norm.weight");
  const float* g = reinterpret_cast<const float*>(norm.data);
  for (int64_t i = 0; i < norm.n_elements(); ++i) EXPECT_NEAR(g[i], 1.0f, 0.1f);
}

INSTANTIATE_TEST_SUITE_P(Types, CreateEachType,
                         ::testing::Values(DType::TQ1_0, DType::TQ2_0, DType::I2_S),
                         [](const ::testing::TestParamInfo<DType>& p) {
                           return std::string(dtype_name(p.param));
                         });

TEST(Create, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir dir;
  for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    create_random_model(test::tiny_options(7, type), dir.file("a.gguf"));
    create_random_model(test::tiny_options(7, type), dir.file("b.gguf"));
    create_random_model(test::tiny_options(8, type), dir.file("c.gguf"));
    const std::string a = test::read_file(dir.file("a.gguf"));
    EXPECT_EQ(a, test::read_file(dir.file("b.gguf"))) << dtype_name(type);
    const std::string c = test::read_file(dir.file("c.gguf"));
    EXPECT_EQ(a.size(), c.size());
    EXPECT_NE(a, c) << dtype_name(type);
  }
}

TEST(Create, UntiedAndEmbeddingTypes) {
  TempDir dir;
  for (DType embd : {DType::F32, DType::Q8_0, DType::Q6_K, DType::BF16}) {
    CreateOptions opt = test::tiny_options(42, DType::TQ2_0);
    opt.hp.tied_head = false;
    opt.hp.act = Activation::Silu;
    opt.embd_type = embd;
    const std::string path = dir.file("untied.gguf");
    create_random_model(opt, path);
    auto f = GgufFile::open(path);
    expect_same_hparams(HParams::from_gguf(*f), opt.hp);
    expect_tensors(*f, opt.hp, DType::TQ2_0, embd);
    const GgufTensor& out = f->tensor("output.weight");
    std::vector<float> x(size_t(out.n_elements()));
    dequantize(out.type, out.data, out.n_elements(), x.data());
    double sum2 = 0;
    for (float v : x) sum2 += double(v) * v;
    EXPECT_NEAR(std::sqrt(sum2 / double(x.size())), 0.5, 0.03) << dtype_name(embd);
  }
}

// Widths a packed type cannot hold (1bitLLM's 3B: 3200, 8640) are written as f16 ternary
// values (llama.cpp's converter's form), one magnitude per tensor; the rest stay packed.
TEST(Create, WidthsTheTypeCannotHoldAreF16TernaryValues) {
  TempDir dir;
  CreateOptions opt = test::tiny_options(42, DType::TQ2_0);
  opt.hp.n_embd = 128;  // heads of 32: valid, but not a multiple of 256
  opt.hp.rope_dim = 32;
  const std::string path = dir.file("odd.gguf");
  EXPECT_EQ(create_random_model(opt, path).n_f16_linears, 6 * 2);  // all but ffn_down, 2 blocks
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->tensor("blk.0.attn_q.weight").type, DType::F16);      // 128 inputs
  EXPECT_EQ(f->tensor("blk.1.ffn_up.weight").type, DType::F16);      // 128 inputs
  EXPECT_EQ(f->tensor("blk.0.ffn_down.weight").type, DType::TQ2_0);  // 768 inputs
  const GgufTensor& q = f->tensor("blk.0.attn_q.weight");
  std::vector<float> v(size_t(q.n_elements()));
  dequantize(q.type, q.data, q.n_elements(), v.data());
  const float s = fp16_to_f32(f32_to_fp16(1.0f / std::sqrt(128.0f)));
  int counts[3] = {0, 0, 0};
  for (float x : v) {
    ASSERT_TRUE(x == 0.0f || std::fabs(x) == s) << x;
    ++counts[x < 0 ? 0 : x == 0 ? 1 : 2];
  }
  for (int c : counts) EXPECT_NEAR(double(c) / double(v.size()), 1.0 / 3.0, 0.03);

  opt.type = DType::I2_S;  // runs of 128 fit, but q6_K needs 256
  opt.embd_type = DType::Q6_K;
  const std::string e2 = error_of([&] { create_random_model(opt, dir.file("bad.gguf")); });
  EXPECT_NE(e2.find("q6_K"), std::string::npos) << e2;
  EXPECT_FALSE(test::file_exists(dir.file("bad.gguf")));
}

TEST(Create, ByteLevelTokenizer) {
  TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  create_random_model(test::tiny_options(42, DType::TQ2_0), path);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->get_string("tokenizer.ggml.pre"), "default");
  const GgufArray& tokens = f->get_array("tokenizer.ggml.tokens", GgufType::STRING);
  ASSERT_EQ(int64_t(tokens.size()), 512);
  const GgufArray& types = f->get_array("tokenizer.ggml.token_type", GgufType::I32);
  ASSERT_EQ(types.size(), tokens.size());
  for (size_t i = 0; i < types.ints.size(); ++i)
    EXPECT_EQ(types.ints[i], i < 256 || i > 258 ? 1 : 3) << i;
  EXPECT_EQ(f->get_array("tokenizer.ggml.merges", GgufType::STRING).size(), 0u);
  // GPT-2 byte mapping: 'A' is itself, space is U+0120, byte 0 is U+0100, byte 173 is U+0143.
  EXPECT_EQ(tokens.strings[65], "A");
  EXPECT_EQ(tokens.strings[32], "\xc4\xa0");
  EXPECT_EQ(tokens.strings[0], "\xc4\x80");
  EXPECT_EQ(tokens.strings[173], "\xc5\x83");
  EXPECT_EQ(tokens.strings[255], "\xc3\xbf");
  EXPECT_EQ(tokens.strings[256], "<|begin_of_text|>");
  EXPECT_EQ(tokens.strings[257], "<|end_of_text|>");
  EXPECT_EQ(tokens.strings[258], "<|eot_id|>");
  EXPECT_EQ(tokens.strings[259],
            "\xc4\xa0"
            "a");
  EXPECT_EQ(tokens.strings[259 + 25],
            "\xc4\xa0"
            "z");
  EXPECT_EQ(tokens.strings[259 + 26],
            "\xc4\xa0"
            "aa");
  EXPECT_EQ(tokens.strings[511],
            "\xc4\xa0"
            "is");  // 252 = (8 + 1) * 26 + 18
  EXPECT_EQ(f->get_u32("tokenizer.ggml.bos_token_id"), 256u);
  EXPECT_EQ(f->get_u32("tokenizer.ggml.eos_token_id"), 257u);
  EXPECT_TRUE(f->get_bool_or("tokenizer.ggml.add_bos_token", false));

  // The tokenizer module reads it: every byte is one token, and text round-trips.
  auto tok = Tokenizer::from_gguf(*f);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos(), 256);
  EXPECT_EQ(tok->eos(), 257);
  const std::string text = "Hello, w\xc3\xb6rld!";
  const std::vector<int32_t> ids = tok->encode(text, true, false);
  ASSERT_EQ(ids.size(), text.size() + 1);
  EXPECT_EQ(ids[0], 256);
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i + 1], int32_t(uint8_t(text[i])));
  EXPECT_EQ(tok->decode(std::vector<int32_t>(ids.begin() + 1, ids.end())), text);
}

TEST(Create, NoTokenizerBelow259Tokens) {
  TempDir dir;
  CreateOptions opt = test::tiny_options(42, DType::TQ2_0);
  opt.hp.n_vocab = 256;
  create_random_model(opt, dir.file("v256.gguf"));
  auto f = GgufFile::open(dir.file("v256.gguf"));
  EXPECT_FALSE(f->has("tokenizer.ggml.model"));
  EXPECT_FALSE(f->has("tokenizer.ggml.tokens"));
  EXPECT_EQ(HParams::from_gguf(*f).n_vocab, 256);
}

TEST(Create, FromConfigJson) {
  TempDir dir;
  // Hugging Face names.
  test::write_file(dir.file("hf.json"), R"({
    "vocab_size": 300, "hidden_size": 512, "intermediate_size": 1280,
    "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
    "hidden_act": "relu2", "tie_word_embeddings": false })");
  const HParams hp = hparams_from_config_json(dir.file("hf.json"));
  EXPECT_EQ(hp.n_vocab, 300);
  EXPECT_EQ(hp.n_embd, 512);
  EXPECT_EQ(hp.n_ff, 1280);
  EXPECT_EQ(hp.n_layer, 3);
  EXPECT_EQ(hp.n_head, 8);
  EXPECT_EQ(hp.n_head_kv, 2);
  EXPECT_EQ(hp.n_ctx_train, 1024);
  EXPECT_EQ(hp.rope_dim, 64);
  EXPECT_EQ(hp.rms_eps, 1e-6f);
  EXPECT_EQ(hp.rope_theta, 500000.0f);
  EXPECT_FALSE(hp.tied_head);
  CreateOptions opt;
  opt.hp = hp;
  opt.type = DType::TQ1_0;
  create_random_model(opt, dir.file("cfg.gguf"));
  auto f = GgufFile::open(dir.file("cfg.gguf"));
  expect_same_hparams(HParams::from_gguf(*f), hp);
  expect_tensors(*f, hp, DType::TQ1_0, DType::F16);
  EXPECT_EQ(f->get_array("tokenizer.ggml.tokens", GgufType::STRING).size(), 300u);

  // trit's names; defaults for the rest.
  test::write_file(dir.file("trit.json"),
                   R"({"n_vocab": 512, "n_embd": 256, "n_ff": 512, "n_layer": 1, "n_head": 2,
                       "act": "silu"})");
  const HParams hp2 = hparams_from_config_json(dir.file("trit.json"));
  EXPECT_EQ(hp2.n_head_kv, 2);
  EXPECT_EQ(hp2.act, Activation::Silu);
  EXPECT_TRUE(hp2.tied_head);

  // Errors name the file and the field.
  test::write_file(dir.file("missing.json"), R"({"n_vocab": 512, "n_embd": 256})");
  std::string e = error_of([&] { hparams_from_config_json(dir.file("missing.json")); });
  EXPECT_NE(e.find("missing.json"), std::string::npos) << e;
  EXPECT_NE(e.find("n_ff"), std::string::npos) << e;
  test::write_file(dir.file("broken.json"), "{\"n_vocab\": ");
  e = error_of([&] { hparams_from_config_json(dir.file("broken.json")); });
  EXPECT_NE(e.find("broken.json"), std::string::npos) << e;
}

}  // namespace
}  // namespace trit::engine
