// LoRA adapters: scaling and targets, PEFT-style initialisation, the adapter GGUF (checked
// against llama.cpp's loader rules on a file re-parsed independently), the safetensors writer,
// and PEFT folders (hand-built here, one of them byte by byte) to GGUF and back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "tools/create.h"
#include "model/hparams.h"
#include "st_builder.h"
#include "test_util.h"
#include "core/lora.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a trit::Error: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

// A small model shape: q/o 32 -> 32, k/v 32 -> 16, gate/up 32 -> 48, down 48 -> 32, head 32 -> 50.
HParams small_hp() {
  HParams hp;
  hp.arch = "bitnet";
  hp.n_vocab = 50;
  hp.n_embd = 32;
  hp.n_ff = 48;
  hp.n_layer = 2;
  hp.n_head = 4;
  hp.n_head_kv = 2;
  hp.rope_dim = 8;
  return hp;
}

// lora_init, then B filled with random values so that round trips test both matrices.
LoraAdapter random_adapter(const HParams& hp, const std::string& targets, int64_t rank,
                           uint64_t seed, bool rslora = false) {
  LoraAdapter a = lora_init(hp, targets, rank, 16.0f, rslora, seed);
  a.dropout = 0.05f;
  std::mt19937 rng(uint32_t(seed) + 1);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (auto& [name, l] : a.layers) {
    for (float& x : l.b) x = u(rng);
  }
  return a;
}

void expect_same(const LoraAdapter& x, const LoraAdapter& y, float tol = 0.0f) {
  EXPECT_EQ(x.alpha, y.alpha);
  EXPECT_EQ(x.rslora, y.rslora);
  EXPECT_EQ(x.dropout, y.dropout);
  EXPECT_EQ(x.base_arch, y.base_arch);
  ASSERT_EQ(x.layers.size(), y.layers.size());
  for (const auto& [name, l] : x.layers) {
    auto it = y.layers.find(name);
    ASSERT_NE(it, y.layers.end()) << name;
    const LoraLayer& m = it->second;
    EXPECT_EQ(l.n_in, m.n_in) << name;
    EXPECT_EQ(l.n_out, m.n_out) << name;
    EXPECT_EQ(l.rank, m.rank) << name;
    ASSERT_EQ(l.a.size(), m.a.size()) << name;
    ASSERT_EQ(l.b.size(), m.b.size()) << name;
    for (size_t i = 0; i < l.a.size(); ++i) {
      if (tol == 0.0f) {
        ASSERT_EQ(l.a[i], m.a[i]) << name << " A[" << i << "]";
      } else {
        ASSERT_NEAR(l.a[i], m.a[i], tol * std::fabs(l.a[i]) + 1e-7f) << name << " A[" << i << "]";
      }
    }
    for (size_t i = 0; i < l.b.size(); ++i) {
      if (tol == 0.0f) {
        ASSERT_EQ(l.b[i], m.b[i]) << name << " B[" << i << "]";
      } else {
        ASSERT_NEAR(l.b[i], m.b[i], tol * std::fabs(l.b[i]) + 1e-7f) << name << " B[" << i << "]";
      }
    }
  }
}

float f32_at(const GgufTensor& t, int64_t i) {
  float v;
  std::memcpy(&v, t.data + 4 * i, 4);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Scaling, targets, names

TEST(Lora, Scaling) {
  LoraAdapter a;
  a.alpha = 16.0f;
  EXPECT_FLOAT_EQ(a.scaling(8), 2.0f);
  a.rslora = true;
  EXPECT_FLOAT_EQ(a.scaling(16), 4.0f);
  EXPECT_FLOAT_EQ(a.scaling(4), 8.0f);
  EXPECT_CONTAINS(error_of([&] { a.scaling(0); }), "rank");
}

TEST(Lora, TargetSuffixes) {
  using V = std::vector<std::string>;
  EXPECT_EQ(lora_target_suffixes("all"),
            (V{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}));
  EXPECT_EQ(
      lora_target_suffixes("q,k,v,o,gate,up,down,head"),
      (V{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"}));
  EXPECT_EQ(lora_target_suffixes(" v , q "), (V{"attn_q", "attn_v"}));
  EXPECT_EQ(lora_target_suffixes("head,all").back(), "output");
  EXPECT_EQ(lora_target_suffixes("head"), (V{"output"}));
  EXPECT_EQ(lora_target_suffixes("attn_q,ffn_down"), (V{"attn_q", "ffn_down"}));
  EXPECT_CONTAINS(error_of([] { lora_target_suffixes("q,embed"); }), "'embed'");
  EXPECT_CONTAINS(error_of([] { lora_target_suffixes(""); }), "empty");
  EXPECT_CONTAINS(error_of([] { lora_target_suffixes("q,,v"); }), "empty");
  EXPECT_EQ(lora_target_short_name("attn_output"), "o");
  EXPECT_EQ(lora_target_short_name("output"), "head");
  for (const std::string& s : lora_target_suffixes("all,head")) {
    EXPECT_EQ(lora_target_suffixes(lora_target_short_name(s)), V{s});
  }
}

TEST(Lora, LayerNames) {
  auto t = parse_lora_layer_name("blk.12.ffn_down.weight");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->layer, 12);
  EXPECT_EQ(t->what, "ffn_down");
  EXPECT_EQ(lora_layer_name(*t), "blk.12.ffn_down.weight");
  t = parse_lora_layer_name("output.weight");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->layer, -1);
  EXPECT_EQ(lora_layer_name(*t), "output.weight");
  for (const char* bad : {"blk.0.attn_norm.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight",
                          "token_embd.weight", "blk.0.attn_q.scale", "blk..attn_q.weight"}) {
    EXPECT_FALSE(parse_lora_layer_name(bad)) << bad;
  }
  const HParams hp = small_hp();
  EXPECT_EQ(lora_base_shape(hp, "blk.1.attn_k.weight", "x"), (std::pair<int64_t, int64_t>(32, 16)));
  EXPECT_EQ(lora_base_shape(hp, "output.weight", "x"), (std::pair<int64_t, int64_t>(32, 50)));
  EXPECT_CONTAINS(error_of([&] { lora_base_shape(hp, "blk.2.attn_k.weight", "where"); }),
                  "block 2 does not exist");

  LoraAdapter a = lora_init(hp, "all,head", 2, 4.0f, false, 1);
  const std::vector<std::string> order = lora_layer_order(a);
  ASSERT_EQ(order.size(), 15u);
  EXPECT_EQ(order[0], "blk.0.attn_q.weight");
  EXPECT_EQ(order[6], "blk.0.ffn_down.weight");
  EXPECT_EQ(order[7], "blk.1.attn_q.weight");
  EXPECT_EQ(order[14], "output.weight");
}

// ---------------------------------------------------------------------------------------------
// lora_init

TEST(Lora, InitStatistics) {
  HParams hp = small_hp();
  hp.n_embd = 256;
  hp.n_ff = 512;
  hp.n_head = 4;
  hp.rope_dim = 64;
  const LoraAdapter a = lora_init(hp, "all,head", 8, 32.0f, true, 1234);
  EXPECT_EQ(a.layers.size(), size_t(2 * 7 + 1));
  EXPECT_EQ(a.alpha, 32.0f);
  EXPECT_TRUE(a.rslora);
  EXPECT_EQ(a.base_arch, "bitnet");
  for (const auto& [name, l] : a.layers) {
    const auto [n_in, n_out] = lora_base_shape(hp, name, "test");
    EXPECT_EQ(l.n_in, n_in) << name;
    EXPECT_EQ(l.n_out, n_out) << name;
    EXPECT_EQ(l.rank, 8);
    ASSERT_EQ(l.a.size(), size_t(8 * n_in));
    ASSERT_EQ(l.b.size(), size_t(8 * n_out));
    for (float x : l.b) ASSERT_EQ(x, 0.0f) << name;
    // Uniform in [-1/sqrt(n_in), 1/sqrt(n_in)]: mean 0, variance bound^2 / 3.
    const double bound = 1.0 / std::sqrt(double(n_in));
    double sum = 0, sum2 = 0, lo = 0, hi = 0;
    for (float x : l.a) {
      ASSERT_LE(std::fabs(x), bound) << name;
      sum += x;
      sum2 += double(x) * x;
      lo = std::min(lo, double(x));
      hi = std::max(hi, double(x));
    }
    const double n = double(l.a.size());
    const double sd = bound / std::sqrt(3.0);
    EXPECT_LT(std::fabs(sum / n), 5 * sd / std::sqrt(n)) << name;
    EXPECT_NEAR(sum2 / n, bound * bound / 3, 0.1 * bound * bound / 3) << name;
    EXPECT_GT(hi, 0.95 * bound) << name;  // the range is used, not a narrower one
    EXPECT_LT(lo, -0.95 * bound) << name;
  }
  // Deterministic per seed; another seed gives other values.
  const LoraAdapter same = lora_init(hp, "all,head", 8, 32.0f, true, 1234);
  expect_same(a, same);
  const LoraAdapter other = lora_init(hp, "all,head", 8, 32.0f, true, 1235);
  EXPECT_NE(a.layers.at("blk.0.attn_q.weight").a, other.layers.at("blk.0.attn_q.weight").a);
  // Targets: only those asked for.
  const LoraAdapter qv = lora_init(hp, "q,v", 4, 8.0f, false, 1);
  EXPECT_EQ(qv.layers.size(), 4u);
  EXPECT_TRUE(qv.layers.count("blk.1.attn_v.weight"));
  EXPECT_FALSE(qv.layers.count("output.weight"));
  EXPECT_CONTAINS(error_of([&] { lora_init(hp, "q", 0, 8.0f, false, 1); }), "rank");
  EXPECT_CONTAINS(error_of([&] { lora_init(hp, "q,bogus", 4, 8.0f, false, 1); }), "bogus");
}

// ---------------------------------------------------------------------------------------------
// Adapter GGUF

TEST(AdapterGguf, RoundTripF32IsExact) {
  TempDir dir;
  const HParams hp = small_hp();
  const LoraAdapter a = random_adapter(hp, "all,head", 4, 7);
  const std::string p1 = dir.file("a.gguf"), p2 = dir.file("b.gguf");
  save_adapter_gguf(a, p1);
  EXPECT_FALSE(test::file_exists(p1 + ".tmp"));
  const LoraAdapter back = load_adapter_gguf(p1);
  expect_same(a, back);
  check_adapter_against(back, hp, "model");
  // GGUF -> LoraAdapter -> GGUF gives the same bytes.
  save_adapter_gguf(back, p2);
  EXPECT_EQ(test::read_file(p1), test::read_file(p2));
}

TEST(AdapterGguf, RoundTripF16WithinHalfPrecision) {
  TempDir dir;
  const LoraAdapter a = random_adapter(small_hp(), "q,down,head", 3, 9);
  save_adapter_gguf(a, dir.file("a.gguf"), DType::F16);
  const auto f = GgufFile::open(dir.file("a.gguf"));
  for (const GgufTensor& t : f->tensors()) EXPECT_EQ(t.type, DType::F16) << t.name;
  const LoraAdapter back = adapter_from_gguf(*f);
  expect_same(a, back, 1.0f / 1024);
  // bf16 is accepted as well.
  save_adapter_gguf(a, dir.file("b.gguf"), DType::BF16);
  expect_same(a, load_adapter_gguf(dir.file("b.gguf")), 1.0f / 128);
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
  const LoraAdapter a = random_adapter(small_hp(), "q,v", 4, 3, /*rslora=*/true);
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
    const LoraAdapter a = random_adapter(hp, "all,head", 8, 11);
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
  check_adapter_against(a, small_hp(), "m");
}

TEST(AdapterGguf, CheckAgainstBase) {
  const HParams hp = small_hp();
  LoraAdapter a = random_adapter(hp, "all,head", 2, 1);
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

// ---------------------------------------------------------------------------------------------
// safetensors writer

TEST(SafetensorsWriter, MatchesTheFormatAndReadsBack) {
  TempDir dir;
  const std::vector<float> x = {1.0f, -2.5f, 0.125f, 3.0f, 65504.0f, -0.0f};
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.add_f32("x", {2, 3}, x.data());
  w.add_f32("h", {6}, x.data(), StDType::F16);
  w.add_f32("b", {3, 2}, x.data(), StDType::BF16);
  const std::string path = dir.file("t.safetensors");
  w.write(path);
  EXPECT_FALSE(test::file_exists(path + ".tmp"));

  // The same bytes as the tests' own byte-by-byte builder (Python's layout).
  const std::string expect = test::st_file({{"x", "F32", {2, 3}, test::f32_bytes(x)},
                                            {"h", "F16", {6}, test::f16_bytes(x)},
                                            {"b", "BF16", {3, 2}, test::bf16_bytes(x)}},
                                           {{"format", "pt"}});
  const std::string got = test::read_file(path);
  EXPECT_EQ(got, expect);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(got[size_t(i)]);
  EXPECT_EQ(hlen % 8, 0u);
  EXPECT_EQ(got[8], '{');
  EXPECT_EQ(got.size(), 8 + hlen + 6 * 4 + 6 * 2 + 6 * 2);

  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->find("x")->to_f32(path), x);
  EXPECT_EQ(f->find("h")->dtype, StDType::F16);
  EXPECT_EQ(f->find("h")->to_f32(path), x);  // all exact in f16
  EXPECT_EQ(f->find("b")->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(f->find("b")->to_f32(path)[2], 0.125f);

  EXPECT_CONTAINS(error_of([&] { w.add_f32("x", {1}, x.data()); }), "duplicate");
  EXPECT_CONTAINS(error_of([&] { w.add_f32("__metadata__", {1}, x.data()); }), "__metadata__");
  EXPECT_CONTAINS(error_of([&] { w.add("y", StDType::F32, {2}, x.data(), 4); }), "needs 8");
  EXPECT_CONTAINS(error_of([&] { w.write(dir.file("no/such/dir/t.safetensors")); }),
                  "no/such/dir/t.safetensors");
}

// ---------------------------------------------------------------------------------------------
// PEFT

// Values of the hand-built PEFT tensors: A[i][j] and B[o][k] distinct and exact in bf16.
float a_value(int64_t i, int64_t j) {
  return float(1 + i * 16 + j) / 4.0f;
}
float b_value(int64_t o, int64_t k) {
  return -float(1 + o * 8 + k) / 8.0f;
}

std::vector<float> a_matrix(int64_t r, int64_t n_in) {  // (r, n_in) row-major, as torch
  std::vector<float> v;
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < n_in; ++j) v.push_back(a_value(i, j));
  return v;
}
std::vector<float> b_matrix(int64_t n_out, int64_t r) {  // (n_out, r) row-major
  std::vector<float> v;
  for (int64_t o = 0; o < n_out; ++o)
    for (int64_t k = 0; k < r; ++k) v.push_back(b_value(o, k));
  return v;
}

constexpr int64_t kR = 2;
const char* const kQA = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const char* const kQB = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
const char* const kDA = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";
const char* const kDB = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight";
const char* const kHA = "base_model.model.lm_head.lora_A.weight";
const char* const kHB = "base_model.model.lm_head.lora_B.weight";

json base_config() {
  return json{{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"r", kR},
              {"lora_alpha", 4},
              {"lora_dropout", 0.1},
              {"target_modules", {"q_proj", "down_proj", "lm_head"}},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"modules_to_save", nullptr},
              {"rank_pattern", json::object()},
              {"alpha_pattern", json::object()},
              {"use_rslora", false}};
}

void write_config(const std::string& dir, const json& config) {
  test::write_file(dir + "/adapter_config.json", config.dump(2));
}

// q (4 -> 3), down (5 -> 4), head (4 -> 6): through the writer.
void write_peft_with_writer(const std::string& dir) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  const auto qa = a_matrix(kR, 4), qb = b_matrix(3, kR);
  const auto da = a_matrix(kR, 5), db = b_matrix(4, kR);
  const auto ha = a_matrix(kR, 4), hb = b_matrix(6, kR);
  w.add_f32(kQA, {kR, 4}, qa.data());
  w.add_f32(kQB, {3, kR}, qb.data());
  w.add_f32(kDA, {kR, 5}, da.data(), StDType::F16);
  w.add_f32(kDB, {4, kR}, db.data());
  w.add_f32(kHA, {kR, 4}, ha.data());
  w.add_f32(kHB, {6, kR}, hb.data(), StDType::BF16);
  w.write(dir + "/adapter_model.safetensors");
  write_config(dir, base_config());
}

std::string le_f32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  std::string s;
  for (int i = 0; i < 4; ++i) s += char((u >> (8 * i)) & 0xff);
  return s;
}
std::string le_u16(uint16_t u) {
  return std::string{char(u & 0xff), char(u >> 8)};
}

// The same folder, its safetensors file assembled here byte by byte: a header typed out by
// hand, spaces to a multiple of 8, the length as 8 little-endian bytes, then the data.
void write_peft_by_hand(const std::string& dir) {
  std::string data;
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  auto entry = [&](const char* name, const char* dtype, int64_t rows, int64_t cols,
                   const std::string& bytes) {
    const size_t begin = data.size();
    data += bytes;
    header += std::string(",\"") + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" +
              std::to_string(rows) + "," + std::to_string(cols) + "],\"data_offsets\":[" +
              std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  };
  auto a_f32 = [](int64_t r, int64_t n_in) {
    std::string s;
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < n_in; ++j) s += le_f32(a_value(i, j));
    return s;
  };
  auto b_f32 = [](int64_t n_out, int64_t r) {
    std::string s;
    for (int64_t o = 0; o < n_out; ++o)
      for (int64_t k = 0; k < r; ++k) s += le_f32(b_value(o, k));
    return s;
  };
  std::string da_f16, hb_bf16;
  for (int64_t i = 0; i < kR; ++i)
    for (int64_t j = 0; j < 5; ++j) da_f16 += le_u16(f32_to_fp16(a_value(i, j)));
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t k = 0; k < kR; ++k) {
      uint32_t u;
      const float x = b_value(o, k);
      std::memcpy(&u, &x, 4);
      hb_bf16 += le_u16(uint16_t(u >> 16));  // exact in bf16: the top half of the f32 bits
    }
  // Deliberately not in the order of the other writer, nor sorted.
  entry(kHB, "BF16", 6, kR, hb_bf16);
  entry(kQA, "F32", kR, 4, a_f32(kR, 4));
  entry(kDA, "F16", kR, 5, da_f16);
  entry(kQB, "F32", 3, kR, b_f32(3, kR));
  entry(kDB, "F32", 4, kR, b_f32(4, kR));
  entry(kHA, "F32", kR, 4, a_f32(kR, 4));
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::string file;
  for (int i = 0; i < 8; ++i) file += char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  file += header + data;
  test::write_file(dir + "/adapter_model.safetensors", file);
  write_config(dir, base_config());
}

void expect_hand_built(const LoraAdapter& a) {
  EXPECT_EQ(a.alpha, 4.0f);
  EXPECT_FALSE(a.rslora);
  EXPECT_FLOAT_EQ(a.dropout, 0.1f);
  EXPECT_EQ(a.base_arch, "bitnet");
  ASSERT_EQ(a.layers.size(), 3u);
  const struct {
    const char* name;
    int64_t n_in, n_out;
  } want[] = {
      {"blk.0.attn_q.weight", 4, 3}, {"blk.1.ffn_down.weight", 5, 4}, {"output.weight", 4, 6}};
  for (const auto& w : want) {
    auto it = a.layers.find(w.name);
    ASSERT_NE(it, a.layers.end()) << w.name;
    const LoraLayer& l = it->second;
    EXPECT_EQ(l.rank, kR);
    EXPECT_EQ(l.n_in, w.n_in) << w.name;
    EXPECT_EQ(l.n_out, w.n_out) << w.name;
    EXPECT_EQ(l.a, a_matrix(kR, w.n_in)) << w.name;
    EXPECT_EQ(l.b, b_matrix(w.n_out, kR)) << w.name;
  }
}

// PEFT (r, in) bytes land in GGUF unchanged: lora_a ne = [n_in, r], element A[i][j] at ggml
// index j + i * n_in; lora_b ne = [r, n_out], B[o][k] at k + o * r.
void expect_gguf_layout(const std::string& gguf_path) {
  const auto f = GgufFile::open(gguf_path);
  const GgufTensor& qa = f->tensor("blk.0.attn_q.weight.lora_a");
  const GgufTensor& qb = f->tensor("blk.0.attn_q.weight.lora_b");
  EXPECT_EQ(qa.ne, (std::vector<int64_t>{4, kR}));
  EXPECT_EQ(qb.ne, (std::vector<int64_t>{kR, 3}));
  for (int64_t i = 0; i < kR; ++i)
    for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(f32_at(qa, j + i * 4), a_value(i, j));
  for (int64_t o = 0; o < 3; ++o)
    for (int64_t k = 0; k < kR; ++k) EXPECT_EQ(f32_at(qb, k + o * kR), b_value(o, k));
  const GgufTensor& da = f->tensor("blk.1.ffn_down.weight.lora_a");
  EXPECT_EQ(da.ne, (std::vector<int64_t>{5, kR}));
  EXPECT_EQ(f32_at(da, 3 + 1 * 5), a_value(1, 3));
  const GgufTensor& hb = f->tensor("output.weight.lora_b");
  EXPECT_EQ(hb.ne, (std::vector<int64_t>{kR, 6}));
  EXPECT_EQ(f32_at(hb, 1 + 5 * kR), b_value(5, 1));
  EXPECT_EQ(f->get_f32("adapter.lora.alpha"), 4.0f);
}

TEST(Peft, HandBuiltFoldersConvertWithTheRightLayout) {
  TempDir dir;
  const std::string by_writer = dir.file("w"), by_hand = dir.file("h");
  fs::create_directory(by_writer);
  fs::create_directory(by_hand);
  write_peft_with_writer(by_writer);
  write_peft_by_hand(by_hand);
  for (const std::string& d : {by_writer, by_hand}) {
    SCOPED_TRACE(d);
    const LoraAdapter a = load_peft(d);
    expect_hand_built(a);
    const std::string g = d + ".gguf";
    save_adapter_gguf(a, g);
    expect_gguf_layout(g);
  }
  // Both folders give the same adapter, and the same GGUF bytes.
  EXPECT_EQ(test::read_file(by_writer + ".gguf"), test::read_file(by_hand + ".gguf"));
}

TEST(Peft, RoundTripPeftGgufPeft) {
  TempDir dir;
  const std::string src = dir.file("src");
  fs::create_directory(src);
  write_peft_with_writer(src);
  const LoraAdapter a = load_peft(src);

  save_adapter_gguf(a, dir.file("a.gguf"));
  const LoraAdapter g = load_adapter_gguf(dir.file("a.gguf"));
  expect_same(a, g);
  save_peft(g, dir.file("out"));
  const LoraAdapter back = load_peft(dir.file("out"));
  expect_same(a, back);

  // The written config is what PEFT writes.
  const json c = json::parse(test::read_file(dir.file("out/adapter_config.json")));
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["base_model_name_or_path"], "");
  EXPECT_EQ(c["r"], kR);
  EXPECT_EQ(c["lora_alpha"].get<double>(), 4.0);
  EXPECT_EQ(c["use_rslora"], false);
  EXPECT_EQ(c["bias"], "none");
  EXPECT_EQ(c["lora_dropout"].get<double>(), 0.1);  // the shortest decimal of 0.1f
  // Not every block carries q_proj and down_proj: full module names.
  EXPECT_EQ(c["target_modules"],
            (json{"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"}));
  const auto st = SafetensorsFile::open(dir.file("out/adapter_model.safetensors"));
  EXPECT_EQ(st->metadata().at("format"), "pt");
  EXPECT_EQ(st->find(kQA)->shape, (std::vector<int64_t>{kR, 4}));
  EXPECT_EQ(st->find(kQB)->shape, (std::vector<int64_t>{3, kR}));
  EXPECT_EQ(st->find(kDA)->dtype, StDType::F32);

  // Through an f16 GGUF: within half precision.
  save_adapter_gguf(a, dir.file("h.gguf"), DType::F16);
  save_peft(load_adapter_gguf(dir.file("h.gguf")), dir.file("out16"));
  expect_same(a, load_peft(dir.file("out16")), 1.0f / 1024);
}

TEST(Peft, SaveInitAdapterAndRsLora) {
  TempDir dir;
  const HParams hp = small_hp();
  const LoraAdapter a = random_adapter(hp, "all,head", 4, 21, /*rslora=*/true);
  save_peft(a, dir.file("p"));
  const json c = json::parse(test::read_file(dir.file("p/adapter_config.json")));
  EXPECT_EQ(c["target_modules"], (json{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj", "lm_head"}));
  EXPECT_EQ(c["use_rslora"], true);
  EXPECT_EQ(c["lora_alpha"].get<double>(), 16.0);  // the original alpha, not alpha * sqrt(r)
  const LoraAdapter back = load_peft(dir.file("p"));
  expect_same(a, back);
  EXPECT_FLOAT_EQ(back.scaling(4), 8.0f);
  // PEFT -> GGUF keeps rsLoRA: llama.cpp's alpha / r gives alpha / sqrt(r).
  save_adapter_gguf(back, dir.file("a.gguf"));
  const auto f = GgufFile::open(dir.file("a.gguf"));
  EXPECT_FLOAT_EQ(f->get_f32("adapter.lora.alpha") / 4.0f, 8.0f);
  expect_same(a, adapter_from_gguf(*f));

  // Replacing an existing export is fine; a folder with other files is left alone.
  save_peft(a, dir.file("p"));
  test::write_file(dir.file("p/README.md"), "mine");
  const std::string e = error_of([&] { save_peft(a, dir.file("p")); });
  EXPECT_CONTAINS(e, "README.md");
  EXPECT_EQ(test::read_file(dir.file("p/README.md")), "mine");
  // Nothing temporary is left beside it.
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    const std::string n = entry.path().filename().string();
    EXPECT_TRUE(n == "p" || n == "a.gguf") << n;
  }
  // One rank only.
  LoraAdapter mixed = a;
  LoraLayer& l = mixed.layers.at("blk.1.attn_v.weight");
  l.rank = 2;
  l.a.resize(size_t(2 * l.n_in));
  l.b.resize(size_t(2 * l.n_out));
  EXPECT_CONTAINS(error_of([&] { save_peft(mixed, dir.file("m")); }), "blk.1.attn_v.weight");
  EXPECT_FALSE(test::file_exists(dir.file("m")));
}

TEST(Peft, TargetModulesAsPeftMatchesThem) {
  TempDir dir;
  const std::string d = dir.file("p");
  fs::create_directory(d);
  write_peft_with_writer(d);
  json c = base_config();
  c["target_modules"] = ".*\\.(q_proj|down_proj)|lm_head";  // a regular expression, full match
  write_config(d, c);
  expect_hand_built(load_peft(d));
  c["target_modules"] = ".*\\.q_proj";  // down_proj and lm_head not selected
  write_config(d, c);
  EXPECT_CONTAINS(error_of([&] { load_peft(d); }), "not selected by adapter_config.json");
  c["target_modules"] = json{"self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"};
  write_config(d, c);
  expect_hand_built(load_peft(d));
  c["target_modules"] = "all-linear";  // excludes the head
  write_config(d, c);
  EXPECT_CONTAINS(error_of([&] { load_peft(d); }), "lm_head");
  c.erase("target_modules");
  write_config(d, c);
  expect_hand_built(load_peft(d));
  c["use_rslora"] = true;
  c["lora_alpha"] = 2.5;
  write_config(d, c);
  const LoraAdapter a = load_peft(d);
  EXPECT_TRUE(a.rslora);
  EXPECT_EQ(a.alpha, 2.5f);
  EXPECT_EQ(peft_module_of("blk.3.ffn_gate.weight"), "model.layers.3.mlp.gate_proj");
  EXPECT_EQ(peft_module_of("output.weight"), "lm_head");
  EXPECT_EQ(gguf_name_of_peft_module("model.layers.3.self_attn.o_proj"),
            "blk.3.attn_output.weight");
  EXPECT_FALSE(gguf_name_of_peft_module("model.layers.3.self_attn.x_proj"));
  EXPECT_FALSE(gguf_name_of_peft_module("model.embed_tokens"));
}

TEST(Peft, MalformedFoldersNameFileAndField) {
  TempDir dir;
  const std::string d = dir.file("p");
  fs::create_directory(d);
  auto with_config = [&](const std::function<void(json&)>& edit) {
    write_peft_with_writer(d);
    json c = base_config();
    edit(c);
    write_config(d, c);
    return error_of([&] { load_peft(d); });
  };
  auto with_tensors = [&](const std::vector<test::StEntry>& entries) {
    json c = base_config();
    c["target_modules"] = "all-linear";
    write_config(d, c);
    test::write_file(d + "/adapter_model.safetensors", test::st_file(entries));
    return error_of([&] { load_peft(d); });
  };
  std::string e;
  e = with_config([](json& c) { c["rank_pattern"] = {{"q_proj", 4}}; });
  EXPECT_CONTAINS(e, "adapter_config.json");
  EXPECT_CONTAINS(e, "rank_pattern");
  EXPECT_CONTAINS(with_config([](json& c) {
                    c["alpha_pattern"] = {{"q_proj", 4}};
                  }),
                  "alpha_pattern");
  e = with_config([](json& c) { c["target_modules"] = {"q_proj", "embed_tokens"}; });
  EXPECT_CONTAINS(e, "adapter_config.json");
  EXPECT_CONTAINS(e, "target_modules");
  EXPECT_CONTAINS(e, "embed_tokens");
  EXPECT_CONTAINS(with_config([](json& c) {
                    c["target_modules"] = {"q_proj", "down_proj", "lm_head", "k_proj"};
                  }),
                  "'k_proj' matches no tensor");
  EXPECT_CONTAINS(with_config([](json& c) { c["bias"] = "all"; }), "'bias'");
  EXPECT_CONTAINS(with_config([](json& c) { c["fan_in_fan_out"] = true; }), "fan_in_fan_out");
  EXPECT_CONTAINS(with_config([](json& c) { c["modules_to_save"] = {"lm_head"}; }),
                  "modules_to_save");
  EXPECT_CONTAINS(with_config([](json& c) { c["use_dora"] = true; }), "use_dora");
  EXPECT_CONTAINS(with_config([](json& c) { c["peft_type"] = "IA3"; }), "peft_type");
  EXPECT_CONTAINS(with_config([](json& c) { c.erase("r"); }), "'r': missing");
  EXPECT_CONTAINS(with_config([](json& c) { c["r"] = 2.5; }), "'r'");
  EXPECT_CONTAINS(with_config([](json& c) { c["lora_dropout"] = 1.0; }), "lora_dropout");
  EXPECT_CONTAINS(with_config([](json& c) { c["target_modules"] = "(unclosed"; }),
                  "target_modules");

  const auto qa = test::f32_bytes(a_matrix(kR, 4));
  const auto qb = test::f32_bytes(b_matrix(3, kR));
  // Missing lora_B.
  e = with_tensors({{kQA, "F32", {kR, 4}, qa}});
  EXPECT_CONTAINS(e, "adapter_model.safetensors");
  EXPECT_CONTAINS(e, kQB);
  EXPECT_CONTAINS(e, "missing");
  // Rank of A differs from r.
  e = with_tensors({{kQA, "F32", {1, 8}, qa}, {kQB, "F32", {3, kR}, qb}});
  EXPECT_CONTAINS(e, kQA);
  EXPECT_CONTAINS(e, "r = 2");
  // B's rank differs.
  e = with_tensors(
      {{kQA, "F32", {kR, 4}, qa}, {kQB, "F32", {2, 3}, test::f32_bytes(b_matrix(2, 3))}});
  EXPECT_CONTAINS(e, kQB);
  // Integer tensor.
  e = with_tensors({{kQA, "I32", {kR, 4}, qa}, {kQB, "F32", {3, kR}, qb}});
  EXPECT_CONTAINS(e, kQA);
  EXPECT_CONTAINS(e, "I32");
  // A module trit cannot adapt.
  e = with_tensors({{"base_model.model.model.embed_tokens.lora_A.weight", "F32", {kR, 4}, qa}});
  EXPECT_CONTAINS(e, "model.embed_tokens");
  // Not a LoRA key.
  e = with_tensors(
      {{"base_model.model.model.layers.0.self_attn.q_proj.weight", "F32", {kR, 4}, qa}});
  EXPECT_CONTAINS(e, "q_proj.weight: not a LoRA weight");
  // No weights file, or only the pickle one.
  fs::remove(d + "/adapter_model.safetensors");
  EXPECT_CONTAINS(error_of([&] { load_peft(d); }), "missing adapter_model.safetensors");
  test::write_file(d + "/adapter_model.bin", "x");
  EXPECT_CONTAINS(error_of([&] { load_peft(d); }), "adapter_model.bin");
  EXPECT_CONTAINS(error_of([&] { load_peft(dir.file("none")); }), "not a folder");

  // A PEFT adapter for a model of another size: check_adapter_against names the layer.
  write_peft_with_writer(d);
  e = error_of([&] { check_adapter_against(load_peft(d), small_hp(), "base.gguf"); });
  EXPECT_CONTAINS(e, "base.gguf");
  EXPECT_CONTAINS(e, "blk.0.attn_q.weight");
}

}  // namespace
}  // namespace trit::engine
