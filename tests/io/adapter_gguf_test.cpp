// The adapter GGUF (io/adapter_gguf.h): round trips, rsLoRA's alpha as llama.cpp reads it, the
// rules of llama.cpp's loader checked on a file re-parsed independently, malformed files, and
// adapters checked against a model's shape.
#include "io/adapter_gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string_view>

#include "core/error.h"
#include "io/gguf.h"
#include "model/hparams.h"
#include "model/lora_set.h"
#include "support/adapters.h"
#include "support/errors.h"
#include "support/files.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::expect_same_adapter;
using test::random_adapter;
using test::small_hparams;
using test::TempDir;

TEST(AdapterGguf, RoundTripF32IsExact) {
  TempDir dir;
  const HParams hp = small_hparams();
  const LoraAdapter a =
      random_adapter(hp, {.targets = "all,head", .rank = 4, .dropout = 0.05f, .seed = 7});
  const std::string p1 = dir.file("a.gguf"), p2 = dir.file("b.gguf");
  save_adapter_gguf(a, p1);
  EXPECT_FALSE(test::file_exists(p1 + ".tmp"));
  const LoraAdapter back = load_adapter_gguf(p1);
  expect_same_adapter(a, back);
  check_adapter_against(back, hp, "model");
  // GGUF -> LoraAdapter -> GGUF gives the same bytes.
  save_adapter_gguf(back, p2);
  EXPECT_EQ(test::read_file(p1), test::read_file(p2));
}

TEST(AdapterGguf, RoundTripF16WithinHalfPrecision) {
  TempDir dir;
  const LoraAdapter a = random_adapter(
      small_hparams(), {.targets = "q,down,head", .rank = 3, .dropout = 0.05f, .seed = 9});
  save_adapter_gguf(a, dir.file("a.gguf"), DType::F16);
  const auto f = GgufFile::open(dir.file("a.gguf"));
  for (const GgufTensor& t : f->tensors()) EXPECT_EQ(t.type, DType::F16) << t.name;
  const LoraAdapter back = adapter_from_gguf(*f);
  expect_same_adapter(a, back, 1.0f / 1024);
  // bf16 is accepted as well.
  save_adapter_gguf(a, dir.file("b.gguf"), DType::BF16);
  expect_same_adapter(a, load_adapter_gguf(dir.file("b.gguf")), 1.0f / 128);
  EXPECT_CONTAINS(error_of([&] { save_adapter_gguf(a, dir.file("c.gguf"), DType::Q8_0); }), "q8_0");
  LoraAdapter big = a;
  big.layers.at("output.weight").b[5] = 1e6f;
  const std::string e = error_of([&] { save_adapter_gguf(big, dir.file("c.gguf"), DType::F16); });
  EXPECT_CONTAINS(e, "output.weight");
  EXPECT_CONTAINS(e, "f16 range");
  EXPECT_FALSE(test::file_exists(dir.file("c.gguf")));
}

TEST(AdapterGguf, RsLoraAlphaForLlamaCpp) {
  TempDir dir;
  const LoraAdapter a = random_adapter(
      small_hparams(), {.targets = "q,v", .rank = 4, .rslora = true, .dropout = 0.05f, .seed = 3});
  ASSERT_EQ(a.alpha, 16.0f);
  save_adapter_gguf(a, dir.file("a.gguf"));
  const auto f = GgufFile::open(dir.file("a.gguf"));
  // llama.cpp's scale: adapter.lora.alpha / rank, rank = lora_b ne[0].
  const float file_alpha = f->get_f32("adapter.lora.alpha");
  EXPECT_FLOAT_EQ(file_alpha, 16.0f * 2.0f);
  const GgufTensor& b = f->tensor("blk.0.attn_q.weight.lora_b");
  EXPECT_FLOAT_EQ(file_alpha / float(b.ne[0]), a.scaling(4));
  EXPECT_FLOAT_EQ(a.scaling(4), 8.0f);
  EXPECT_TRUE(f->get_bool_or("trit.lora.rslora", false));
  EXPECT_EQ(f->get_f32("trit.lora.alpha"), 16.0f);
  EXPECT_FLOAT_EQ(f->get_f32("trit.lora.dropout"), 0.05f);
  const LoraAdapter back = adapter_from_gguf(*f);
  EXPECT_TRUE(back.rslora);
  EXPECT_EQ(back.alpha, 16.0f);

  // Without rsLoRA the two alphas are the same number.
  LoraAdapter plain = a;
  plain.rslora = false;
  save_adapter_gguf(plain, dir.file("p.gguf"));
  const auto g = GgufFile::open(dir.file("p.gguf"));
  EXPECT_EQ(g->get_f32("adapter.lora.alpha"), 16.0f);
  EXPECT_FALSE(g->get_bool_or("trit.lora.rslora", true));

  // rsLoRA with two ranks cannot be written for llama.cpp.
  LoraAdapter mixed = a;
  LoraLayer& l = mixed.layers.at("blk.1.attn_v.weight");
  l.rank = 2;
  l.a.resize(size_t(2 * l.n_in));
  l.b.resize(size_t(2 * l.n_out));
  const std::string e = error_of([&] { save_adapter_gguf(mixed, dir.file("m.gguf")); });
  EXPECT_CONTAINS(e, "m.gguf");
  EXPECT_CONTAINS(e, "rank");
  EXPECT_FALSE(test::file_exists(dir.file("m.gguf")));
  EXPECT_FALSE(test::file_exists(dir.file("m.gguf.tmp")));
  // Without rsLoRA mixed ranks are fine (llama.cpp divides by each layer's rank).
  mixed.rslora = false;
  save_adapter_gguf(mixed, dir.file("m.gguf"));
  EXPECT_EQ(load_adapter_gguf(dir.file("m.gguf")).layers.at("blk.1.attn_v.weight").rank, 2);
}

// The rules of llama.cpp's llama_adapter_lora_init_impl (src/llama-adapter.cpp), checked on the
// written file re-parsed with GgufFile against a real base model file:
//  - general.type is the string "adapter", adapter.type the string "lora",
//    general.architecture the base model's, adapter.lora.alpha an f32 (gguf_get_val_f32 asserts
//    the type);
//  - every tensor name ends in ".lora_a" or ".lora_b" (anything else but "*_norm.weight" is an
//    error), and each base name has both;
//  - the base name is a tensor of the model, and W.ne[0] == a.ne[0], W.ne[1] == b.ne[1],
//    a.ne[1] == b.ne[0] (no transposed form is accepted, except the flipped check for
//    token_embd, which an adapter of linear layers never uses);
//  - the scale is alpha / b.ne[0].
TEST(AdapterGguf, SatisfiesLlamaCppLoaderRules) {
  TempDir dir;
  CreateOptions co;
  co.hp = *hparams_preset("tiny");
  co.hp.n_layer = 2;
  co.hp.tied_head = false;  // output.weight exists, so a head adapter has its base tensor
  co.seed = 3;
  const std::string model_path = dir.file("model.gguf");
  create_random_model(co, model_path);
  const auto model = GgufFile::open(model_path);
  const HParams hp = HParams::from_gguf(*model);

  for (DType type : {DType::F32, DType::F16}) {
    const LoraAdapter a =
        random_adapter(hp, {.targets = "all,head", .rank = 8, .dropout = 0.05f, .seed = 11});
    const std::string path = dir.file("adapter.gguf");
    save_adapter_gguf(a, path, type);
    const auto f = GgufFile::open(path);

    const GgufValue* v = f->find("general.type");
    ASSERT_TRUE(v && v->type == GgufType::STRING);
    EXPECT_EQ(v->s, "adapter");
    v = f->find("adapter.type");
    ASSERT_TRUE(v && v->type == GgufType::STRING);
    EXPECT_EQ(v->s, "lora");
    v = f->find("general.architecture");
    ASSERT_TRUE(v && v->type == GgufType::STRING);
    EXPECT_EQ(v->s, model->get_string("general.architecture"));
    v = f->find("adapter.lora.alpha");
    ASSERT_TRUE(v && v->type == GgufType::F32);
    EXPECT_EQ(v->f, 16.0);

    std::map<std::string, std::pair<const GgufTensor*, const GgufTensor*>> ab;
    for (const GgufTensor& t : f->tensors()) {
      EXPECT_EQ(t.type, type) << t.name;
      ASSERT_EQ(t.ne.size(), 2u) << t.name;
      const std::string_view n = t.name;
      ASSERT_LE(n.size(), 63u) << "GGML_MAX_NAME";
      if (n.ends_with(".lora_a")) {
        ab[std::string(n.substr(0, n.size() - 7))].first = &t;
      } else if (n.ends_with(".lora_b")) {
        ab[std::string(n.substr(0, n.size() - 7))].second = &t;
      } else {
        ADD_FAILURE() << "unexpected suffix: " << t.name;
      }
    }
    EXPECT_EQ(ab.size(), size_t(2 * 7 + 1));
    for (const auto& [base, p] : ab) {
      ASSERT_TRUE(p.first && p.second) << base << " is missing one component";
      const GgufTensor* w = model->find_tensor(base);
      ASSERT_NE(w, nullptr) << base << " does not exist in the base model";
      EXPECT_NE(base, "token_embd.weight");
      EXPECT_EQ(w->ne[0], p.first->ne[0]) << base;         // W.ne[0] == a.ne[0]
      EXPECT_EQ(w->ne[1], p.second->ne[1]) << base;        // W.ne[1] == b.ne[1]
      EXPECT_EQ(p.first->ne[1], p.second->ne[0]) << base;  // a.ne[1] == b.ne[0]
      const float llama_scale = float(v->f) / float(p.second->ne[0]);
      EXPECT_FLOAT_EQ(llama_scale, a.scaling(a.layers.at(base).rank));
    }
    check_adapter_against(load_adapter_gguf(path), hp, model_path);
  }
}

// Writes a GGUF adapter by hand (for malformed files).
struct RawAdapter {
  GgufWriter w;
  std::vector<std::vector<float>> keep;
  RawAdapter(const std::string& type = "adapter", const std::string& atype = "lora") {
    w.set_string("general.architecture", "bitnet");
    w.set_string("general.type", type);
    w.set_string("adapter.type", atype);
    w.set_f32("adapter.lora.alpha", 8.0f);
  }
  void tensor(const std::string& name, std::vector<int64_t> ne, DType type = DType::F32,
              float value = 0.5f) {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    keep.emplace_back(size_t(n), value);  // big enough for any type here
    w.add_tensor(name, type, std::move(ne), keep.back().data());
  }
  void pair(const std::string& base, int64_t n_in, int64_t r, int64_t n_out) {
    tensor(base + ".lora_a", {n_in, r});
    tensor(base + ".lora_b", {r, n_out});
  }
};

TEST(AdapterGguf, MalformedFilesNameFileAndTensor) {
  TempDir dir;
  const std::string path = dir.file("bad.gguf");
  auto load_error = [&](RawAdapter& r) {
    r.w.write(path);
    return error_of([&] { load_adapter_gguf(path); });
  };
  {
    RawAdapter r;
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    r.tensor("blk.0.attn_k.weight.lora_a", {32, 4});
    const std::string e = load_error(r);
    EXPECT_CONTAINS(e, "bad.gguf");
    EXPECT_CONTAINS(e, "blk.0.attn_k.weight.lora_b: missing");
  }
  {
    RawAdapter r;
    r.tensor("blk.0.attn_q.weight.lora_a", {32, 4});
    r.tensor("blk.0.attn_q.weight.lora_b", {2, 32});
    const std::string e = load_error(r);
    EXPECT_CONTAINS(e, "bad.gguf");
    EXPECT_CONTAINS(e, "blk.0.attn_q.weight.lora_a");
    EXPECT_CONTAINS(e, "rank");
  }
  {
    RawAdapter r("model");
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    const std::string e = load_error(r);
    EXPECT_CONTAINS(e, "bad.gguf");
    EXPECT_CONTAINS(e, "general.type");
  }
  {
    RawAdapter r;
    r.w.remove("general.type");
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    EXPECT_CONTAINS(load_error(r), "'general.type' is missing");
  }
  {
    RawAdapter r("adapter", "ia3");
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    EXPECT_CONTAINS(load_error(r), "adapter.type");
  }
  {
    RawAdapter r;
    r.pair("blk.0.attn_norm.weight", 32, 4, 32);
    const std::string e = load_error(r);
    EXPECT_CONTAINS(e, "blk.0.attn_norm.weight.lora_a");
  }
  {
    RawAdapter r;
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    r.tensor("blk.0.attn_q.weight.extra", {4});
    EXPECT_CONTAINS(load_error(r), "blk.0.attn_q.weight.extra");
  }
  {
    RawAdapter r;
    r.tensor("blk.0.attn_q.weight.lora_a", {32, 4}, DType::Q8_0);
    r.tensor("blk.0.attn_q.weight.lora_b", {4, 32});
    const std::string e = load_error(r);
    EXPECT_CONTAINS(e, "blk.0.attn_q.weight.lora_a");
    EXPECT_CONTAINS(e, "q8_0");
  }
  {
    RawAdapter r;
    r.tensor("blk.0.attn_q.weight.lora_a", {32, 4}, DType::F32, std::nanf(""));
    r.tensor("blk.0.attn_q.weight.lora_b", {4, 32});
    EXPECT_CONTAINS(load_error(r), "blk.0.attn_q.weight.lora_a: element 0");
  }
  {
    RawAdapter r;
    r.w.set_bool("trit.lora.rslora", true);
    r.w.set_f32("trit.lora.alpha", 8.0f);  // then adapter.lora.alpha must be 8 * sqrt(4) = 16
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    EXPECT_CONTAINS(load_error(r), "adapter.lora.alpha");
  }
  {
    RawAdapter r;
    r.w.set("adapter.lora.alpha", GgufValue::string("8"));
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    EXPECT_CONTAINS(load_error(r), "adapter.lora.alpha");
  }
  {
    RawAdapter r;
    r.w.set_f32("trit.lora.dropout", 1.5f);
    r.pair("blk.0.attn_q.weight", 32, 4, 32);
    EXPECT_CONTAINS(load_error(r), "trit.lora.dropout");
  }
  {
    RawAdapter r;
    EXPECT_CONTAINS(load_error(r), "no tensors");
  }
}

TEST(AdapterGguf, AcceptsFilesAsLlamaCppWritesThem) {
  TempDir dir;
  const std::string path = dir.file("a.gguf");
  {
    // No alpha (llama.cpp then scales by 1: alpha = rank); a rank-1 lora_a with ne = [n_in]
    // (ggml drops trailing 1s); extra metadata.
    RawAdapter r;
    r.w.remove("adapter.lora.alpha");
    r.w.set_string("general.name", "x");
    r.tensor("blk.1.ffn_down.weight.lora_a", {48});
    r.tensor("blk.1.ffn_down.weight.lora_b", {1, 32});
    r.w.write(path);
  }
  const LoraAdapter a = load_adapter_gguf(path);
  const LoraLayer& l = a.layers.at("blk.1.ffn_down.weight");
  EXPECT_EQ(l.rank, 1);
  EXPECT_EQ(l.n_in, 48);
  EXPECT_EQ(l.n_out, 32);
  EXPECT_EQ(a.alpha, 1.0f);
  EXPECT_FLOAT_EQ(a.scaling(1), 1.0f);
  EXPECT_FALSE(a.rslora);
  check_adapter_against(a, small_hparams(), "m");
}

TEST(AdapterGguf, CheckAgainstBase) {
  const HParams hp = small_hparams();
  LoraAdapter a =
      random_adapter(hp, {.targets = "all,head", .rank = 2, .dropout = 0.05f, .seed = 1});
  check_adapter_against(a, hp, "m.gguf");
  HParams b158 = hp;
  b158.arch = "bitnet-b1.58";
  check_adapter_against(a, b158, "m.gguf");  // one family

  LoraAdapter other = a;
  other.base_arch = "llama";
  std::string e = error_of([&] { check_adapter_against(other, hp, "m.gguf"); });
  EXPECT_CONTAINS(e, "m.gguf");
  EXPECT_CONTAINS(e, "'llama'");

  HParams bigger = hp;
  bigger.n_ff = 64;
  e = error_of([&] { check_adapter_against(a, bigger, "m.gguf"); });
  EXPECT_CONTAINS(e, "m.gguf");
  EXPECT_CONTAINS(e, "blk.0.ffn_gate.weight");

  HParams fewer = hp;
  fewer.n_layer = 1;
  e = error_of([&] { check_adapter_against(a, fewer, "m.gguf"); });
  EXPECT_CONTAINS(e, "blk.1.");

  HParams vocab = hp;
  vocab.n_vocab = 60;
  EXPECT_CONTAINS(error_of([&] { check_adapter_against(a, vocab, "m.gguf"); }), "output.weight");
}

}  // namespace
}  // namespace trit::engine
