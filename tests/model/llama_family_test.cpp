// Llama-architecture ternary models (model/hparams.h): the engine's forward pass against the
// reference computed as llama.cpp defines that architecture (support/reference_model.h: no
// sub-norms, W_q and W_k in the file's row order with rope on adjacent pairs), for every
// ternary type and with adapters; llama files holding floats; and how the activation of a
// file is decided, stated and overridden.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "model/llama_layout.h"
#include "model/model.h"
#include "support/adapters.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "support/reference_model.h"
#include "trit/session.h"
#include "trit/tools.h"

namespace trit::engine {
namespace {

std::vector<int32_t> llama_test_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((i * 37 + 11) % vocab);
  return ids;
}

CreateOptions llama_options(uint64_t seed, DType type) {
  CreateOptions o = test::tiny_options(seed, type);
  o.hp.arch = "llama";
  o.hp.act = Activation::Silu;
  return o;
}

int llama_top1_agreement(const std::vector<float>& a, const std::vector<double>& b, int64_t V) {
  int agree = 0;
  for (size_t t = 0; t < a.size() / size_t(V); ++t) {
    const float* x = a.data() + t * size_t(V);
    const double* y = b.data() + t * size_t(V);
    agree += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
  }
  return agree;
}

struct LlamaCase {
  DType type;
  bool tied;
  bool lora;
};

class LlamaForward : public ::testing::TestWithParam<LlamaCase> {};

TEST_P(LlamaForward, MatchesLlamaCppsDefinitionOfTheArchitecture) {
  const LlamaCase c = GetParam();
  test::TempDir dir;
  CreateOptions o = llama_options(17, c.type);
  o.hp.tied_head = c.tied;
  const std::string path = test::create_model(dir, "llama.gguf", o);
  auto model = Model::load(path);
  const HParams& hp = model->hparams();
  ASSERT_EQ(hp.family(), Family::Llama);
  EXPECT_EQ(hp.act, Activation::Silu);
  EXPECT_EQ(model->weights().blocks[0].attn_sub_norm, nullptr);
  EXPECT_EQ(GgufFile::open(path)->find_tensor("blk.0.ffn_sub_norm.weight"), nullptr);
  const LoraAdapter ad =
      test::random_adapter(hp, {.targets = "all,head", .rank = 4, .alpha = 8.0f, .seed = 4});
  test::ReferenceModel ref(path);
  if (c.lora) ref.add_lora(ad, 0.75);
  const std::vector<int32_t> ids = llama_test_ids(14, hp.n_vocab);
  for (bool act_quant : {false, true}) {
    test::LogitsRun run{.act_quant = act_quant};
    if (c.lora) run.lora = {{&ad, 0.75f}};
    const std::vector<float> got = test::session_logits(*model, ids, run);
    const std::vector<double> want = ref.logits(ids, act_quant);
    // Float activations: f32 rounding only. Int8: a rare flipped rounding of one activation.
    EXPECT_LT(test::rel_l2(got, want), act_quant ? 1e-2 : 1e-4) << "act_quant " << act_quant;
    EXPECT_GE(llama_top1_agreement(got, want, hp.n_vocab), int(ids.size()) - 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, LlamaForward,
                         ::testing::Values(LlamaCase{DType::I2_S, true, false},
                                           LlamaCase{DType::TQ2_0, false, true},
                                           LlamaCase{DType::TQ1_0, true, true}),
                         [](const ::testing::TestParamInfo<LlamaCase>& info) {
                           return cat(dtype_name(info.param.type), info.param.tied ? "_tied" : "",
                                      info.param.lora ? "_lora" : "");
                         });

// Copies src to dst, each tensor through edit(name, type, bytes) (which may change both), and
// each key through keys(key, value) (return false to drop it).
void copy_gguf(const std::string& src, const std::string& dst,
               const std::function<void(const GgufTensor&, DType&, std::vector<uint8_t>&)>& edit,
               const std::function<bool(const std::string&, GgufValue&)>& keys = nullptr) {
  auto f = GgufFile::open(src);
  GgufWriter w;
  for (const auto& [key, value] : f->metadata()) {
    if (key == "general.alignment") continue;
    GgufValue v = value;
    if (keys && !keys(key, v)) continue;
    w.set(key, v);
  }
  std::vector<std::vector<uint8_t>> keep;
  for (const GgufTensor& t : f->tensors()) {
    DType type = t.type;
    std::vector<uint8_t> bytes(t.data, t.data + t.nbytes);
    edit(t, type, bytes);
    w.add_tensor(t.name, type, t.ne);
    keep.push_back(std::move(bytes));
  }
  w.begin(dst);
  for (const auto& b : keep) w.append(b.data(), b.size());
  w.finish();
}

// A llama model's adapter file holds the B rows of q and k in the file's order, as the base's
// rows and llama.cpp's LoRA files are; loading it puts them back.
TEST(LlamaFiles, AdapterFilesHoldQkRowsInTheFilesOrder) {
  test::TempDir dir;
  const std::string path = test::create_model(dir, "l.gguf", llama_options(6, DType::TQ2_0));
  auto model = Model::load(path);
  const HParams& hp = model->hparams();
  const LoraAdapter ad =
      test::random_adapter(hp, {.targets = "q,k,v", .rank = 4, .alpha = 8.0f, .seed = 9});
  LoraAdapter file = ad;
  adapter_rows_to_file(file, hp, "test");
  const int64_t hd = hp.head_dim(), half = hd / 2, r = 4;
  for (const char* name : {"blk.0.attn_q.weight", "blk.1.attn_k.weight"}) {
    const LoraLayer& a = ad.layers.at(name);
    const LoraLayer& f = file.layers.at(name);
    for (int64_t row = 0; row < a.n_out; ++row) {
      const int64_t head = row / hd, i = row % hd, file_row = head * hd + 2 * (i % half) + i / half;
      for (int64_t k = 0; k < r; ++k) {
        ASSERT_EQ(f.b[size_t(file_row * r + k)], a.b[size_t(row * r + k)]) << name << " " << row;
      }
    }
  }
  EXPECT_EQ(file.layers.at("blk.0.attn_v.weight").b, ad.layers.at("blk.0.attn_v.weight").b);
  LoraAdapter back = file;
  adapter_rows_from_file(back, hp, "test");
  EXPECT_EQ(back.layers.at("blk.0.attn_q.weight").b, ad.layers.at("blk.0.attn_q.weight").b);
  // Through the public API: the file loads as the adapter it was made from.
  const std::string adapter_path = dir.file("a.gguf");
  save_adapter_gguf(file, adapter_path);
  trit::ModelOptions cpu;
  cpu.device = "cpu";
  trit::Model api = trit::Model::open(path, cpu);
  const trit::Adapter loaded = api.load_adapter(adapter_path);
  trit::Session s(api);
  const std::vector<int32_t> ids = llama_test_ids(7, 512);
  const std::vector<float> got = s.eval(ids, std::vector<trit::AdapterScale>{{loaded, 1.0f}});
  const std::vector<float> all = test::session_logits(*model, ids, {.lora = {{&ad, 1.0f}}});
  const std::vector<float> want(all.end() - 512, all.end());
  EXPECT_LT(test::rel_l2(got, want), 1e-6);
  // PEFT folders hold Hugging Face's order: export needs the base's head size, and the way
  // back gives the same file order.
  const std::string peft = dir.file("peft");
  EXPECT_CONTAINS(test::error_of([&] { trit::export_peft(adapter_path, peft); }),
                  "give the base model");
  trit::export_peft(adapter_path, peft, path);
  trit::ConvertOptions co;
  co.base = path;
  trit::convert(peft, dir.file("back.gguf"), co);
  const LoraAdapter round = load_adapter_gguf(dir.file("back.gguf"));
  EXPECT_EQ(round.layers.at("blk.0.attn_q.weight").b, file.layers.at("blk.0.attn_q.weight").b);
  EXPECT_EQ(round.layers.at("blk.1.attn_k.weight").b, file.layers.at("blk.1.attn_k.weight").b);
}

// Rope scaling changes the model: a file asking for it is refused, not run with plain rope.
TEST(LlamaFiles, RopeScalingIsRefused) {
  test::TempDir dir;
  const std::string base = test::create_model(dir, "b.gguf", llama_options(2, DType::TQ2_0));
  auto with_keys = [&](const std::string& name, const std::string& type, float factor) {
    const std::string out = dir.file(name);
    auto f = GgufFile::open(base);
    GgufWriter w;
    for (const auto& [k, v] : f->metadata()) {
      if (k != "general.alignment") w.set(k, v);
    }
    w.set_string("llama.rope.scaling.type", type);
    w.set_f32("llama.rope.scaling.factor", factor);
    for (const GgufTensor& t : f->tensors()) w.add_tensor(t.name, t.type, t.ne, t.data);
    w.write(out);
    return out;
  };
  // llama.cpp's bitnet converter writes linear scaling with factor 1: plain rope.
  const std::vector<int32_t> ids = llama_test_ids(6, 512);
  EXPECT_EQ(test::session_logits(*Model::load(with_keys("lin1.gguf", "linear", 1.0f)), ids),
            test::session_logits(*Model::load(base), ids));
  const std::string msg =
      test::error_of([&] { Model::load(with_keys("yarn.gguf", "yarn", 4.0f)); });
  EXPECT_CONTAINS(msg, "yarn.gguf");
  EXPECT_CONTAINS(msg, "llama.rope.scaling.type is 'yarn'");
}

// bitnet.cpp and llama.cpp write some llama conversions with float linear weights already
// ternary (T * s); they are the packed model. Floats that are not ternary belong to an ordinary
// Llama, which trit refuses rather than ternarise.
TEST(LlamaFiles, TernaryFloatsAreThePackedModelOthersAreRefused) {
  test::TempDir dir;
  const std::string packed = test::create_model(dir, "p.gguf", llama_options(3, DType::TQ2_0));
  const std::string floats = dir.file("f16.gguf");
  copy_gguf(packed, floats, [](const GgufTensor& t, DType& type, std::vector<uint8_t>& bytes) {
    if (t.type != DType::TQ2_0) return;
    std::vector<float> x(size_t(t.n_elements()));
    dequantize(t.type, t.data, t.n_elements(), x.data());
    bytes = quantize(DType::F16, x.data(), t.n_elements());
    type = DType::F16;
  });
  const std::vector<int32_t> ids = llama_test_ids(9, 512);
  EXPECT_EQ(test::session_logits(*Model::load(floats), ids),
            test::session_logits(*Model::load(packed), ids));

  const std::string master = dir.file("master.gguf");
  copy_gguf(floats, master, [](const GgufTensor& t, DType&, std::vector<uint8_t>& bytes) {
    if (t.name != "blk.1.ffn_up.weight") return;
    std::vector<float> x(size_t(t.n_elements()));
    dequantize(t.type, t.data, t.n_elements(), x.data());
    x[5] *= 1.5f;  // one weight off the three values
    bytes = quantize(DType::F16, x.data(), t.n_elements());
  });
  const std::string msg = test::error_of([&] { Model::load(master); });
  EXPECT_CONTAINS(msg, "master.gguf");
  EXPECT_CONTAINS(msg, "blk.1.ffn_up.weight");
  EXPECT_CONTAINS(msg, "not ternary");
}

// A bitnet file without <arch>.hidden_activation: llama.cpp's files of the 1bitLLM family
// (SentencePiece vocabulary) compute SiLU; 2B4T's (llama-3 BPE) relu2 (bitnet.cpp's
// "bitnet-b1.58" files: anchor_files_test). The decision is stated with its reason, and
// overridable.
TEST(ActivationOfAFile, DecidedFromTheVocabularyStatedAndOverridable) {
  test::TempDir dir;
  const std::string base = test::create_model(dir, "b.gguf", test::tiny_options(5));
  auto variant = [&](const std::string& name, std::optional<std::string> tokenizer_model) {
    const std::string out = dir.file(name);
    copy_gguf(
        base, out, [](const GgufTensor&, DType&, std::vector<uint8_t>&) {},
        [&](const std::string& key, GgufValue& v) {
          if (key == "bitnet.hidden_activation") return false;
          if (key == "tokenizer.ggml.model" && tokenizer_model) v.s = *tokenizer_model;
          return true;
        });
    return out;
  };
  struct Case {
    const char* name;
    std::optional<std::string> tokenizer_model;
    Activation want;
    const char* why;
  };
  for (const Case& c : {Case{"spm.gguf", "llama", Activation::Silu, "SentencePiece"},
                        Case{"bpe.gguf", std::nullopt, Activation::Relu2, "2B4T"}}) {
    SCOPED_TRACE(c.name);
    const std::string path = variant(c.name, c.tokenizer_model);
    ActivationSource src;
    const HParams hp = HParams::from_gguf(*GgufFile::open(path), std::nullopt, &src);
    EXPECT_EQ(hp.act, c.want);
    EXPECT_TRUE(src.assumed);
    EXPECT_CONTAINS(src.why, "no bitnet.hidden_activation");
    EXPECT_CONTAINS(src.why, c.why);
    const HParams over = HParams::from_gguf(*GgufFile::open(path), Activation::Relu2, &src);
    EXPECT_EQ(over.act, Activation::Relu2);
    EXPECT_FALSE(src.assumed);
  }
  // Loading says so once, and the override gives the logits of a file that states it.
  const std::string bpe = dir.file("bpe.gguf");
  std::vector<std::string> warnings;
  auto m = Model::load(bpe, [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_CONTAINS(warnings[0], "bpe.gguf: activation relu2");
  EXPECT_CONTAINS(warnings[0], "--activation");
  CreateOptions silu = test::tiny_options(5);
  silu.hp.act = Activation::Silu;
  const std::string stated = test::create_model(dir, "silu.gguf", silu);
  const std::vector<int32_t> ids = llama_test_ids(8, 512);
  warnings.clear();
  auto overridden = Model::load(
      bpe, [&](const std::string& w) { warnings.push_back(w); }, Activation::Silu);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(test::session_logits(*overridden, ids),
            test::session_logits(*Model::load(stated), ids));
  EXPECT_NE(test::session_logits(*m, ids), test::session_logits(*Model::load(stated), ids));
}

TEST(ActivationOfAFile, BitnetCppArchitectureAndStatedKeys) {
  test::TempDir dir;
  CreateOptions o = test::tiny_options(6);
  o.hp.act = Activation::Silu;
  const std::string path = test::create_model(dir, "s.gguf", o);
  ActivationSource src;
  EXPECT_EQ(HParams::from_gguf(*GgufFile::open(path), std::nullopt, &src).act, Activation::Silu);
  EXPECT_FALSE(src.assumed);
  EXPECT_EQ(src.why, "from bitnet.hidden_activation");
}

}  // namespace
}  // namespace trit::engine
