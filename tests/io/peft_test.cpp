// PEFT folders (io/peft.h), hand-built here (one of them byte by byte), to GGUF and back; PEFT's
// matching of target_modules; malformed folders.
#include "io/peft.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/half.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/lora_set.h"
#include "support/adapters.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/safetensors_builder.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::error_of;
using test::expect_same_adapter;
using test::le_f32;
using test::le_u16;
using test::random_adapter;
using test::small_hparams;
using test::TempDir;

float f32_at(const GgufTensor& t, int64_t i) {
  float v;
  std::memcpy(&v, t.data + 4 * i, 4);
  return v;
}

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
  expect_same_adapter(a, g);
  save_peft(g, dir.file("out"));
  const LoraAdapter back = load_peft(dir.file("out"));
  expect_same_adapter(a, back);

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
  expect_same_adapter(a, load_peft(dir.file("out16")), 1.0f / 1024);
}

TEST(Peft, SaveInitAdapterAndRsLora) {
  TempDir dir;
  const HParams hp = small_hparams();
  const LoraAdapter a = random_adapter(
      hp, {.targets = "all,head", .rank = 4, .rslora = true, .dropout = 0.05f, .seed = 21});
  save_peft(a, dir.file("p"));
  const json c = json::parse(test::read_file(dir.file("p/adapter_config.json")));
  EXPECT_EQ(c["target_modules"], (json{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj", "lm_head"}));
  EXPECT_EQ(c["use_rslora"], true);
  EXPECT_EQ(c["lora_alpha"].get<double>(), 16.0);  // the original alpha, not alpha * sqrt(r)
  const LoraAdapter back = load_peft(dir.file("p"));
  expect_same_adapter(a, back);
  EXPECT_FLOAT_EQ(back.scaling(4), 8.0f);
  // PEFT -> GGUF keeps rsLoRA: llama.cpp's alpha / r gives alpha / sqrt(r).
  save_adapter_gguf(back, dir.file("a.gguf"));
  const auto f = GgufFile::open(dir.file("a.gguf"));
  EXPECT_FLOAT_EQ(f->get_f32("adapter.lora.alpha") / 4.0f, 8.0f);
  expect_same_adapter(a, adapter_from_gguf(*f));

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
  e = error_of([&] { check_adapter_against(load_peft(d), small_hparams(), "base.gguf"); });
  EXPECT_CONTAINS(e, "base.gguf");
  EXPECT_CONTAINS(e, "blk.0.attn_q.weight");
}

}  // namespace
}  // namespace trit::engine
