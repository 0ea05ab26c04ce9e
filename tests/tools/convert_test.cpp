// Hugging Face import (`trit convert`): small BitNet folders written here, converted, and the
// GGUF checked against ternary codes and scales computed independently in the test.
#include "tools/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/select.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "infer/session.h"
#include "io/gguf.h"
#include "model/hf_config.h"
#include "model/hparams.h"
#include "model/model.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/safetensors_builder.h"

namespace trit::engine {
namespace {

using nlohmann::json;
using test::bf16_bytes;
using test::error_of;
using test::f32_bytes;
using test::raw_bytes;
using test::st_file;
using test::StEntry;
using test::TempDir;
using test::write_file;

struct Shape {
  int64_t hidden = 256, ff = 512, layers = 2, heads = 4, kv_heads = 2, vocab = 32;
};

// A linear layer whose absmean ternarisation is known by construction: codes drawn first, zeros
// given magnitudes below 0.3 m and non-zeros 0.7 m .. 1.6 m, so that W / mean|W| stays far from
// the rounding boundary 0.5 whatever the order of summation.
struct Linear {
  int64_t n_out = 0, n_in = 0;
  std::vector<float> w;      // (n_out, n_in), row-major as torch
  std::vector<int8_t> trit;  // the codes absmean must give
  double scale = 0;          // mean |w|
};

Linear make_linear(int64_t n_out, int64_t n_in, std::mt19937& rng) {
  Linear l;
  l.n_out = n_out;
  l.n_in = n_in;
  const float m = 0.02f;
  std::uniform_int_distribution<int> code(-1, 1);
  std::uniform_real_distribution<float> small(-0.3f, 0.3f), big(0.7f, 1.6f);
  for (int64_t i = 0; i < n_out * n_in; ++i) {
    const int t = code(rng);
    l.trit.push_back(int8_t(t));
    l.w.push_back(t == 0 ? small(rng) * m : float(t) * big(rng) * m);
  }
  return l;
}

// Recomputes codes and scale from (possibly rounded) values, and checks the margin held.
void refresh(Linear& l) {
  double sum = 0;
  for (float x : l.w) sum += std::fabs(double(x));
  l.scale = std::max(sum / double(l.w.size()), 1e-5);
  for (size_t i = 0; i < l.w.size(); ++i) {
    const double r = double(l.w[i]) / l.scale;
    ASSERT_GT(std::fabs(std::fabs(r) - 0.5), 0.05) << "test weights too close to the boundary";
    const int8_t t = int8_t(std::fabs(r) < 0.5 ? 0 : (r > 0 ? 1 : -1));
    ASSERT_EQ(t, l.trit[i]);
  }
}

const char* kHfLinear[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                           "mlp.down_proj"};
const char* kGgufLinear[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                             "ffn_gate", "ffn_up", "ffn_down"};

struct HfModel {
  Shape s;
  std::map<std::string, std::vector<float>> floats;  // norms, embeddings (torch order)
  std::map<std::string, Linear> linears;             // by HF name ("model.layers.0.mlp.up_proj")
  bool untied = false;

  std::pair<int64_t, int64_t> out_in(const std::string& what) const {
    const int64_t kv = s.hidden / s.heads * s.kv_heads;
    if (what == "self_attn.q_proj" || what == "self_attn.o_proj") return {s.hidden, s.hidden};
    if (what == "self_attn.k_proj" || what == "self_attn.v_proj") return {kv, s.hidden};
    if (what == "mlp.down_proj") return {s.hidden, s.ff};
    return {s.ff, s.hidden};
  }
};

HfModel make_model(Shape s, bool untied, uint32_t seed) {
  HfModel m;
  m.s = s;
  m.untied = untied;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> around1(0.5f, 1.5f);
  auto vec = [&](int64_t n, bool norm) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = norm ? around1(rng) : 0.1f * normal(rng);
    return v;
  };
  m.floats["model.embed_tokens.weight"] = vec(s.vocab * s.hidden, false);
  if (untied) m.floats["lm_head.weight"] = vec(s.vocab * s.hidden, false);
  m.floats["model.norm.weight"] = vec(s.hidden, true);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m.floats[p + "input_layernorm.weight"] = vec(s.hidden, true);
    m.floats[p + "post_attention_layernorm.weight"] = vec(s.hidden, true);
    m.floats[p + "self_attn.attn_sub_norm.weight"] = vec(s.hidden, true);
    m.floats[p + "mlp.ffn_sub_norm.weight"] = vec(s.ff, true);
    for (const char* what : kHfLinear) {
      const auto [o, i] = m.out_in(what);
      m.linears[p + what] = make_linear(o, i, rng);
    }
  }
  for (auto& [name, l] : m.linears) refresh(l);
  return m;
}

json make_config(const Shape& s, const std::string& act, std::optional<bool> tie) {
  json c = {{"architectures", {"BitNetForCausalLM"}},
            {"model_type", "bitnet"},
            {"hidden_size", s.hidden},
            {"intermediate_size", s.ff},
            {"num_hidden_layers", s.layers},
            {"num_attention_heads", s.heads},
            {"num_key_value_heads", s.kv_heads},
            {"vocab_size", s.vocab},
            {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 500000.0},
            {"hidden_act", act},
            {"quantization_config",
             {{"quant_method", "bitnet"},
              {"linear_class", "autobitlinear"},
              {"quantization_mode", "online"}}}};
  if (tie) c["tie_word_embeddings"] = *tie;
  return c;
}

// The packed 2B4T layout, written here from FORMATS.md: byte [i, k] holds (t + 1) of row
// i + j * (out / 4) at bits 2j.
std::string pack_2b4t(const Linear& l) {
  const int64_t rows = l.n_out / 4;
  std::vector<uint8_t> out(static_cast<size_t>(rows * l.n_in), 0);
  for (int64_t r = 0; r < l.n_out; ++r) {
    const int64_t i = r % rows, j = r / rows;
    for (int64_t k = 0; k < l.n_in; ++k) {
      out[size_t(i * l.n_in + k)] |= uint8_t((l.trit[size_t(r * l.n_in + k)] + 1) << (2 * j));
    }
  }
  return raw_bytes(out);
}

// FloatTernaryMultiplier: offline AutoBitLinear with float codes (-1, 0, +1) and weight_scale =
// mean|W| as a multiplier.
enum class Layout { F32, BF16, PackedInverse, PackedMultiplier, FloatTernaryMultiplier };

// All tensors of the model as safetensors entries, in the given layout.
std::vector<StEntry> entries(const HfModel& m, Layout layout) {
  std::vector<StEntry> out;
  auto fl = [&](const std::vector<float>& v) {
    return layout == Layout::BF16 ? bf16_bytes(v) : f32_bytes(v);
  };
  const std::string fdt = layout == Layout::BF16 ? "BF16" : "F32";
  for (const auto& [name, v] : m.floats) {
    std::vector<int64_t> shape = {int64_t(v.size())};
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      shape = {m.s.vocab, m.s.hidden};
    }
    out.push_back({name, fdt, shape, fl(v)});
  }
  for (const auto& [name, l] : m.linears) {
    if (layout == Layout::F32 || layout == Layout::BF16) {
      out.push_back({name + ".weight", fdt, {l.n_out, l.n_in}, fl(l.w)});
    } else if (layout == Layout::FloatTernaryMultiplier) {
      const std::vector<float> codes(l.trit.begin(), l.trit.end());
      out.push_back({name + ".weight", "BF16", {l.n_out, l.n_in}, bf16_bytes(codes)});
      out.push_back({name + ".weight_scale", "F32", {1}, f32_bytes({float(l.scale)})});
    } else {
      out.push_back({name + ".weight", "U8", {l.n_out / 4, l.n_in}, pack_2b4t(l)});
      const float ws = layout == Layout::PackedInverse ? float(1.0 / l.scale) : float(l.scale);
      // 2B4T stores weight_scale as bf16; bf16 here too for the inverse reading.
      if (layout == Layout::PackedInverse) {
        out.push_back({name + ".weight_scale", "BF16", {1}, bf16_bytes({ws})});
      } else {
        out.push_back({name + ".weight_scale", "F32", {1}, f32_bytes({ws})});
      }
    }
  }
  return out;
}

void write_folder(const std::string& dir, const json& config, const std::vector<StEntry>& es,
                  bool sharded = false) {
  write_file(dir + "/config.json", config.dump(2));
  if (!sharded) {
    write_file(dir + "/model.safetensors", st_file(es, {{"format", "pt"}}));
    return;
  }
  std::vector<StEntry> a, b;
  json map = json::object();
  for (const StEntry& e : es) {
    const bool first =
        e.name.find("layers.0.") != std::string::npos || e.name.find("embed") != std::string::npos;
    (first ? a : b).push_back(e);
    map[e.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_file(dir + "/model-00001-of-00002.safetensors", st_file(a));
  write_file(dir + "/model-00002-of-00002.safetensors", st_file(b));
  write_file(dir + "/model.safetensors.index.json",
             json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump());
}

struct Converted {
  HfConvertResult result;
  std::vector<std::string> warnings;
};

Converted convert(const std::string& src, const std::string& out, DType type,
                  std::optional<DType> embd = std::nullopt) {
  Converted c;
  HfConvertOptions opt;
  opt.src_dir = src;
  opt.out_path = out;
  opt.type = type;
  opt.embd_type = embd;
  opt.warn = [&c](const std::string& w) { c.warnings.push_back(w); };
  c.result = convert_hf_model(opt);
  return c;
}

// Every linear layer of the GGUF decodes to the expected codes and scale.
// A llama file's W_q and W_k hold their rows in llama.cpp's order: within each head of hd
// rows, file row 2j + a is Hugging Face row a * hd / 2 + j.
std::vector<int8_t> llama_file_rows(const Linear& lin, int64_t head_dim) {
  std::vector<int8_t> out(lin.trit.size());
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < lin.n_out; ++r) {
    const int64_t head = r / head_dim, a = (r % head_dim) / half, j = r % half;
    const int64_t file_row = head * head_dim + 2 * j + a;
    std::copy_n(lin.trit.begin() + r * lin.n_in, lin.n_in, out.begin() + file_row * lin.n_in);
  }
  return out;
}

void expect_linears(const GgufFile& g, const HfModel& m, DType type, double scale_rel_tol,
                    bool inverse_bf16 = false, bool llama = false) {
  for (int64_t l = 0; l < m.s.layers; ++l) {
    for (int k = 0; k < 7; ++k) {
      const std::string hf = "model.layers." + std::to_string(l) + "." + kHfLinear[k];
      const Linear& lin = m.linears.at(hf);
      const std::string name = block_tensor_name(l, kGgufLinear[k]);
      SCOPED_TRACE(name);
      const GgufTensor& t = g.tensor(name);
      EXPECT_EQ(t.type, type);
      ASSERT_EQ(t.ne, (std::vector<int64_t>{lin.n_in, lin.n_out}));
      double want = lin.scale;
      if (inverse_bf16) want = 1.0 / double(bf16_to_f32(f32_to_bf16(float(1.0 / lin.scale))));
      const int64_t n = lin.n_in * lin.n_out;
      const bool permuted = llama && k < 2;  // attn_q, attn_k
      const std::vector<int8_t> codes =
          permuted ? llama_file_rows(lin, m.s.hidden / m.s.heads) : lin.trit;
      if (permuted) {
        EXPECT_FALSE(codes == lin.trit);
      }
      if (dtype_traits(type).ternary) {
        const TernaryUnpacked u = unpack_ternary(type, t.data, n);
        ASSERT_EQ(u.trits.size(), lin.trit.size());
        EXPECT_TRUE(u.trits == codes) << "codes differ";
        for (float d : u.block_scales) {
          ASSERT_NEAR(d, want, want * scale_rel_tol);
        }
      } else {
        std::vector<float> v(static_cast<size_t>(n));
        dequantize(type, t.data, n, v.data());
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_NEAR(v[size_t(i)], codes[size_t(i)] * want, want * scale_rel_tol) << i;
        }
      }
    }
  }
}

void expect_floats(const GgufFile& g, const HfModel& m, bool bf16_source, bool llama = false) {
  auto check = [&](const std::string& gguf, const std::string& hf, double rel) {
    SCOPED_TRACE(gguf);
    const GgufTensor& t = g.tensor(gguf);
    const std::vector<float>& want = m.floats.at(hf);
    ASSERT_EQ(t.n_elements(), int64_t(want.size()));
    std::vector<float> v(want.size());
    dequantize(t.type, t.data, t.n_elements(), v.data());
    for (size_t i = 0; i < want.size(); ++i) {
      const float w = bf16_source ? bf16_to_f32(f32_to_bf16(want[i])) : want[i];
      ASSERT_NEAR(v[i], w, std::fabs(w) * rel + 1e-7) << i;
    }
  };
  check("output_norm.weight", "model.norm.weight", 0);
  EXPECT_EQ(g.tensor("output_norm.weight").type, DType::F32);
  for (int64_t l = 0; l < m.s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    check(block_tensor_name(l, "attn_norm"), p + "input_layernorm.weight", 0);
    check(block_tensor_name(l, "ffn_norm"), p + "post_attention_layernorm.weight", 0);
    if (llama) {
      EXPECT_EQ(g.find_tensor(block_tensor_name(l, "attn_sub_norm")), nullptr);
      EXPECT_EQ(g.find_tensor(block_tensor_name(l, "ffn_sub_norm")), nullptr);
      continue;
    }
    check(block_tensor_name(l, "attn_sub_norm"), p + "self_attn.attn_sub_norm.weight", 0);
    check(block_tensor_name(l, "ffn_sub_norm"), p + "mlp.ffn_sub_norm.weight", 0);
    EXPECT_EQ(g.tensor(block_tensor_name(l, "ffn_sub_norm")).type, DType::F32);
    EXPECT_EQ(g.tensor(block_tensor_name(l, "ffn_sub_norm")).ne, (std::vector<int64_t>{m.s.ff}));
  }
  check("token_embd.weight", "model.embed_tokens.weight", 1e-3);
  EXPECT_EQ(g.tensor("token_embd.weight").ne, (std::vector<int64_t>{m.s.hidden, m.s.vocab}));
  if (m.untied) check("output.weight", "lm_head.weight", 1e-3);
}

TEST(HfImport, FloatMasterToEveryTernaryType) {
  TempDir dir;
  const HfModel m = make_model(Shape{}, false, 1);
  write_folder(dir.path(), make_config(m.s, "relu2", true), entries(m, Layout::F32));
  for (DType type : {DType::TQ2_0, DType::TQ1_0, DType::I2_S}) {
    SCOPED_TRACE(std::string(dtype_name(type)));
    const std::string out = dir.file(std::string("out_") + std::string(dtype_name(type)) + ".gguf");
    const Converted c = convert(dir.path(), out, type);
    ASSERT_EQ(c.warnings.size(), 1u);
    EXPECT_CONTAINS(c.warnings[0], "no tokenizer.json");
    EXPECT_CONTAINS(c.warnings[0], "--ids");
    EXPECT_EQ(c.result.n_tensors, size_t(2 + 11 * m.s.layers));
    EXPECT_EQ(c.result.tensors_per_type.at(std::string(dtype_name(type))), size_t(7 * m.s.layers));
    EXPECT_FALSE(c.result.packed_source);

    auto g = GgufFile::open(out);
    EXPECT_EQ(g->get_string("general.architecture"), "bitnet");
    EXPECT_EQ(g->get_int("bitnet.block_count"), m.s.layers);
    EXPECT_EQ(g->get_int("bitnet.embedding_length"), m.s.hidden);
    EXPECT_EQ(g->get_int("bitnet.feed_forward_length"), m.s.ff);
    EXPECT_EQ(g->get_int("bitnet.attention.head_count"), m.s.heads);
    EXPECT_EQ(g->get_int("bitnet.attention.head_count_kv"), m.s.kv_heads);
    EXPECT_EQ(g->get_int("bitnet.vocab_size"), m.s.vocab);
    EXPECT_EQ(g->get_int("bitnet.context_length"), 4096);
    EXPECT_EQ(g->get_int("bitnet.rope.dimension_count"), m.s.hidden / m.s.heads);
    EXPECT_FLOAT_EQ(g->get_f32("bitnet.rope.freq_base"), 500000.0f);
    EXPECT_FLOAT_EQ(g->get_f32("bitnet.attention.layer_norm_rms_epsilon"), 1e-5f);
    EXPECT_EQ(g->get_string("bitnet.hidden_activation"), "relu2");
    EXPECT_EQ(g->find_tensor("output.weight"), nullptr);
    EXPECT_EQ(g->tensor("token_embd.weight").type, DType::F16);
    EXPECT_EQ(g->tensors().size(), c.result.n_tensors);

    const HParams hp = HParams::from_gguf(*g);
    EXPECT_TRUE(hp.tied_head);
    EXPECT_EQ(hp.act, Activation::Relu2);
    EXPECT_EQ(hp.n_head_kv, m.s.kv_heads);

    // TQ types keep the scale as fp16, I2_S as fp32.
    expect_linears(*g, m, type, type == DType::I2_S ? 1e-5 : 6e-4);
    expect_floats(*g, m, false);
    EXPECT_FALSE(test::file_exists(out + ".tmp"));
  }
}

TEST(HfImport, FloatTypesHoldTernaryWeightsAsFloats) {
  TempDir dir;
  Shape s;
  s.layers = 1;
  const HfModel m = make_model(s, false, 2);
  write_folder(dir.path(), make_config(m.s, "relu2", std::nullopt), entries(m, Layout::F32));
  const Converted c = convert(dir.path(), dir.file("f16.gguf"), DType::F16, DType::F32);
  auto g = GgufFile::open(dir.file("f16.gguf"));
  expect_linears(*g, m, DType::F16, 1e-3);
  EXPECT_EQ(g->tensor("token_embd.weight").type, DType::F32);
  expect_floats(*g, m, false);
}

TEST(HfImport, PackedLayoutWeightScaleIsInverse) {
  // linear_class bitlinear (the 2B4T checkpoint's): weight_scale = 1 / mean|W|, stored as bf16.
  TempDir dir;
  const HfModel m = make_model(Shape{}, false, 3);
  json cfg = make_config(m.s, "relu2", true);
  cfg["quantization_config"] = {
      {"quant_method", "bitnet"}, {"linear_class", "bitlinear"}, {"quantization_mode", "offline"}};
  write_folder(dir.path(), cfg, entries(m, Layout::PackedInverse));
  for (DType type : {DType::TQ2_0, DType::I2_S, DType::TQ1_0}) {
    SCOPED_TRACE(std::string(dtype_name(type)));
    const std::string out = dir.file("packed.gguf");
    const Converted c = convert(dir.path(), out, type);
    EXPECT_TRUE(c.result.packed_source);
    auto g = GgufFile::open(out);
    expect_linears(*g, m, type, type == DType::I2_S ? 1e-6 : 6e-4, true);
    expect_floats(*g, m, false);
  }
}

TEST(HfImport, PackedAutoBitLinearOfflineScaleMultiplies) {
  TempDir dir;
  Shape s;
  s.layers = 1;
  const HfModel m = make_model(s, false, 4);
  json cfg = make_config(m.s, "relu2", true);
  cfg["quantization_config"]["quantization_mode"] = "offline";
  write_folder(dir.path(), cfg, entries(m, Layout::PackedMultiplier));
  convert(dir.path(), dir.file("o.gguf"), DType::I2_S);
  auto g = GgufFile::open(dir.file("o.gguf"));
  expect_linears(*g, m, DType::I2_S, 1e-6);
}

TEST(HfImport, ShardedBf16UntiedOneBitLlmNames) {
  // 1bitLLM-style: model_type llama, BitnetForCausalLM, silu, inner_attn_ln / ffn_layernorm,
  // rope_theta only inside rope_parameters (transformers 5), bf16 in two shards, own lm_head.
  TempDir dir;
  HfModel m = make_model(Shape{}, true, 5);
  for (auto& [name, l] : m.linears) {
    for (float& x : l.w) x = bf16_to_f32(f32_to_bf16(x));
    refresh(l);
  }
  json cfg = make_config(m.s, "silu", std::nullopt);
  cfg["model_type"] = "llama";
  cfg["architectures"] = {"BitnetForCausalLM"};
  cfg.erase("rope_theta");
  cfg.erase("quantization_config");
  cfg["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  std::vector<StEntry> es = entries(m, Layout::BF16);
  for (StEntry& e : es) {
    const auto rename = [&](const std::string& from, const std::string& to) {
      const size_t at = e.name.find(from);
      if (at != std::string::npos) e.name.replace(at, from.size(), to);
    };
    rename("self_attn.attn_sub_norm", "self_attn.inner_attn_ln");
    rename("mlp.ffn_sub_norm", "mlp.ffn_layernorm");
  }
  es.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {2}, f32_bytes({1, 2})});
  write_folder(dir.path(), cfg, es, true);
  const Converted c = convert(dir.path(), dir.file("s.gguf"), DType::TQ2_0);
  auto g = GgufFile::open(dir.file("s.gguf"));
  EXPECT_EQ(g->get_string("bitnet.hidden_activation"), "silu");
  EXPECT_FLOAT_EQ(g->get_f32("bitnet.rope.freq_base"), 10000.0f);
  ASSERT_NE(g->find_tensor("output.weight"), nullptr);
  EXPECT_EQ(g->tensor("output.weight").type, DType::F16);
  EXPECT_FALSE(HParams::from_gguf(*g).tied_head);
  expect_linears(*g, m, DType::TQ2_0, 6e-4);
  expect_floats(*g, m, true);
  // Only the tokenizer warning: rotary inv_freq buffers are expected leftovers.
  EXPECT_EQ(c.warnings.size(), 1u);
}

// Llama-architecture ternary checkpoints (Falcon3 1.58-bit, Llama3-8B-1.58, Falcon-E): a
// LlamaForCausalLM with transformers' BitNet quantisation, no sub-norms, SiLU; packed codes with
// BitLinear's inverse weight_scale (Falcon3's config names only quant_method), float master
// weights (online), or float codes with a multiplying weight_scale (offline AutoBitLinear).
TEST(HfImport, LlamaArchitectureTernaryCheckpoints) {
  struct Case {
    Layout layout;
    json quant;
  };
  const Case cases[] = {
      {Layout::PackedInverse, {{"quant_method", "bitnet"}, {"modules_to_not_convert", nullptr}}},
      {Layout::F32,
       {{"quant_method", "bitnet"},
        {"linear_class", "autobitlinear"},
        {"quantization_mode", "online"}}},
      {Layout::FloatTernaryMultiplier,
       {{"quant_method", "bitnet"},
        {"linear_class", "autobitlinear"},
        {"quantization_mode", "offline"},
        {"modules_to_not_convert", {"lm_head"}}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.quant.dump());
    TempDir dir;
    HfModel m = make_model(Shape{}, true, 8);
    for (auto it = m.floats.begin(); it != m.floats.end();) {  // no sub-norms
      it = it->first.find("sub_norm") != std::string::npos ? m.floats.erase(it) : std::next(it);
    }
    json cfg = make_config(m.s, "silu", false);
    cfg["model_type"] = "llama";
    cfg["architectures"] = {"LlamaForCausalLM"};
    cfg["quantization_config"] = c.quant;
    write_folder(dir.path(), cfg, entries(m, c.layout));
    for (DType type : {DType::TQ2_0, DType::I2_S}) {
      SCOPED_TRACE(std::string(dtype_name(type)));
      const std::string out = dir.file("llama.gguf");
      const Converted conv = convert(dir.path(), out, type);
      EXPECT_EQ(conv.warnings.size(), 1u);  // only: no tokenizer.json
      auto g = GgufFile::open(out);
      EXPECT_EQ(g->get_string("general.architecture"), "llama");
      EXPECT_EQ(g->get_int("llama.block_count"), m.s.layers);
      EXPECT_FALSE(g->has("llama.hidden_activation"));  // SiLU, as every llama
      EXPECT_EQ(g->tensors().size(), size_t(3 + 9 * m.s.layers));
      const double tol = type == DType::I2_S ? 1e-5 : 6e-4;
      expect_linears(*g, m, type, tol, c.layout == Layout::PackedInverse, true);
      expect_floats(*g, m, false, true);
      ActivationSource src;
      const HParams hp = HParams::from_gguf(*g, std::nullopt, &src);
      EXPECT_EQ(hp.family(), Family::Llama);
      EXPECT_FALSE(hp.sub_norms());
      EXPECT_EQ(hp.act, Activation::Silu);
      EXPECT_CONTAINS(src.why, "llama");
      EXPECT_FALSE(hp.tied_head);
    }
  }
}

TEST(HfImport, OfflineFloatCodesMustBeTernary) {
  TempDir dir;
  Shape s;
  s.layers = 1;
  HfModel m = make_model(s, false, 9);
  json cfg = make_config(m.s, "relu2", true);
  cfg["quantization_config"]["quantization_mode"] = "offline";
  std::vector<StEntry> es = entries(m, Layout::FloatTernaryMultiplier);
  for (StEntry& e : es) {  // master weights beside a weight_scale: not a ternary layer
    if (e.name == "model.layers.0.mlp.up_proj.weight") {
      e.bytes = bf16_bytes(m.linears.at("model.layers.0.mlp.up_proj").w);
    }
  }
  write_folder(dir.path(), cfg, es);
  const std::string out = dir.file("o.gguf");
  const std::string msg = error_of([&] { convert(dir.path(), out, DType::TQ2_0); });
  EXPECT_CONTAINS(msg, "model.layers.0.mlp.up_proj.weight");
  EXPECT_CONTAINS(msg, "must be ternary");
  EXPECT_FALSE(test::file_exists(out));
  cfg["quantization_config"]["linear_class"] = "bitlinear";  // a divisor: floats make no sense
  write_folder(dir.path(), cfg, entries(m, Layout::FloatTernaryMultiplier));
  EXPECT_CONTAINS(error_of([&] { convert(dir.path(), out, DType::TQ2_0); }), "autobitlinear");
}

TEST(HfImport, ConfigReading) {
  TempDir dir;
  Shape s;
  json cfg = make_config(s, "relu2", std::nullopt);
  write_file(dir.file("config.json"), cfg.dump());
  HParams hp = hf_config_to_hparams(dir.file("config.json"), false);
  EXPECT_TRUE(hp.tied_head);
  EXPECT_EQ(hp.arch, "bitnet");
  EXPECT_EQ(hp.n_ctx_train, 4096);
  EXPECT_FALSE(hf_config_to_hparams(dir.file("config.json"), true).tied_head);
  cfg["tie_word_embeddings"] = true;
  write_file(dir.file("config.json"), cfg.dump());
  EXPECT_TRUE(hf_config_to_hparams(dir.file("config.json"), true).tied_head);

  auto error_for = [&](json c) {
    write_file(dir.file("config.json"), c.dump());
    return error_of([&] { hf_config_to_hparams(dir.file("config.json"), false); });
  };
  json bad = cfg;
  bad["model_type"] = "llama";
  bad["architectures"] = {"LlamaForCausalLM"};
  bad.erase("quantization_config");  // an ordinary float Llama
  std::string msg = error_for(bad);
  EXPECT_CONTAINS(msg, "config.json");
  EXPECT_CONTAINS(msg, "model_type 'llama'");
  EXPECT_CONTAINS(msg, "quant_method");
  bad["quantization_config"] = {{"quant_method", "gptq"}};
  EXPECT_CONTAINS(error_for(bad), "quant_method is 'gptq'");
  bad["quantization_config"] = {{"quant_method", "bitnet"}, {"use_rms_norm", true}};
  EXPECT_CONTAINS(error_for(bad), "use_rms_norm");
  bad["quantization_config"] = {
      {"quant_method", "bitnet"},
      {"modules_to_not_convert", {"lm_head", "model.layers.0.mlp.down_proj"}}};
  EXPECT_CONTAINS(error_for(bad), "modules_to_not_convert lists 'model.layers.0.mlp.down_proj'");
  bad["quantization_config"] = {{"quant_method", "bitnet"},
                                {"modules_to_not_convert", {"lm_head"}}};
  write_file(dir.file("config.json"), bad.dump());
  const HParams llama = hf_config_to_hparams(dir.file("config.json"), false);
  EXPECT_EQ(llama.arch, "llama");
  EXPECT_EQ(llama.act, Activation::Relu2);  // cfg's hidden_act, taken as written
  bad = cfg;
  bad.erase("hidden_size");
  EXPECT_CONTAINS(error_for(bad), "hidden_size");
  bad = cfg;
  bad["num_hidden_layers"] = "two";
  EXPECT_CONTAINS(error_for(bad), "num_hidden_layers");
  bad = cfg;
  bad["hidden_act"] = "gelu";
  EXPECT_CONTAINS(error_for(bad), "hidden_act 'gelu'");
  bad = cfg;
  bad["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_CONTAINS(error_for(bad), "rope_scaling");
  bad = cfg;
  bad["num_key_value_heads"] = 3;
  EXPECT_CONTAINS(error_for(bad), "head_count");
  write_file(dir.file("config.json"), "{\"hidden_size\": ");
  EXPECT_CONTAINS(error_of([&] { hf_config_to_hparams(dir.file("config.json"), false); }),
                  "config.json");
}

// Conversion errors: a message naming the tensor and the problem, and no output file.
class HfImportErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    Shape s;
    s.layers = 1;
    model_ = make_model(s, false, 6);
    config_ = make_config(model_.s, "relu2", true);
    es_ = entries(model_, Layout::F32);
  }
  std::string fail_with(const std::vector<StEntry>& es, DType type = DType::TQ2_0) {
    write_folder(src_.path(), config_, es);
    const std::string out = out_.file("m.gguf");
    const std::string msg = error_of([&] { convert(src_.path(), out, type); });
    EXPECT_FALSE(test::file_exists(out)) << "partial output left behind";
    EXPECT_FALSE(test::file_exists(out + ".tmp")) << "temporary file left behind";
    return msg;
  }
  StEntry& entry(const std::string& name) {
    for (StEntry& e : es_) {
      if (e.name == name) return e;
    }
    throw std::runtime_error("no entry " + name);
  }
  HfModel model_;
  json config_;
  std::vector<StEntry> es_;
  TempDir src_, out_;
};

TEST_F(HfImportErrors, MissingTensor) {
  std::vector<StEntry> es;
  for (const StEntry& e : es_) {
    if (e.name != "model.layers.0.self_attn.k_proj.weight" && e.name != "model.norm.weight") {
      es.push_back(e);
    }
  }
  const std::string msg = fail_with(es);
  EXPECT_CONTAINS(msg, "missing tensors");
  EXPECT_CONTAINS(msg, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_CONTAINS(msg, "model.norm.weight");
}

TEST_F(HfImportErrors, WrongShape) {
  StEntry& e = entry("model.layers.0.self_attn.k_proj.weight");
  const Linear& q = model_.linears.at("model.layers.0.self_attn.q_proj");
  e.shape = {256, 256};
  e.bytes = f32_bytes(q.w);
  const std::string msg = fail_with(es_);
  EXPECT_CONTAINS(msg, "model.safetensors: tensor model.layers.0.self_attn.k_proj.weight");
  EXPECT_CONTAINS(msg, "shape [256, 256], expected [128, 256]");
}

TEST_F(HfImportErrors, WrongEmbeddingShape) {
  StEntry& e = entry("model.embed_tokens.weight");
  e.shape = {16, 512};
  const std::string msg = fail_with(es_);
  EXPECT_CONTAINS(msg, "model.embed_tokens.weight");
  EXPECT_CONTAINS(msg, "expected [32, 256]");
}

TEST_F(HfImportErrors, IntegerMasterWeights) {
  StEntry& e = entry("model.layers.0.mlp.up_proj.weight");
  e.dtype = "I32";
  EXPECT_CONTAINS(fail_with(es_), "dtype I32");
}

TEST_F(HfImportErrors, NanLateInTheFileLeavesNoOutput) {
  // The bad value sits in the last linear layer written, after the output file was begun; an
  // older file of the same name stays as it was.
  StEntry& e = entry("model.layers.0.mlp.down_proj.weight");
  std::vector<float> w = model_.linears.at("model.layers.0.mlp.down_proj").w;
  w[777] = std::nanf("");
  e.bytes = f32_bytes(w);
  write_folder(src_.path(), config_, es_);
  const std::string out = out_.file("m.gguf");
  write_file(out, "older file");
  const std::string msg = error_of([&] { convert(src_.path(), out, DType::TQ2_0); });
  EXPECT_CONTAINS(msg, "model.layers.0.mlp.down_proj.weight");
  EXPECT_CONTAINS(msg, "element 777");
  EXPECT_EQ(test::read_file(out), "older file");
  EXPECT_FALSE(test::file_exists(out + ".tmp"));
}

// Widths a packed type cannot hold (1bitLLM's 3B: 3200, 8640) are written as f16 ternary
// values, said once, and load as the same model as a conversion to f16 throughout.
TEST_F(HfImportErrors, WidthsTheTypeCannotHoldAreWrittenAsF16) {
  Shape s;
  s.hidden = 128;
  s.ff = 512;
  s.heads = 2;
  s.kv_heads = 1;
  s.layers = 1;
  model_ = make_model(s, false, 7);
  config_ = make_config(s, "relu2", true);
  write_folder(src_.path(), config_, entries(model_, Layout::F32));
  const Converted c = convert(src_.path(), out_.file("tq2.gguf"), DType::TQ2_0);
  ASSERT_EQ(c.warnings.size(), 2u);
  EXPECT_CONTAINS(c.warnings[0], "6 linear layers (blk.0.attn_q.weight, 128 inputs, ...)");
  EXPECT_CONTAINS(c.warnings[0], "not a multiple of 256");
  EXPECT_CONTAINS(c.warnings[0], "written as f16 ternary values");
  auto g = GgufFile::open(out_.file("tq2.gguf"));
  EXPECT_EQ(g->tensor("blk.0.attn_q.weight").type, DType::F16);
  EXPECT_EQ(g->tensor("blk.0.ffn_down.weight").type, DType::TQ2_0);  // 512 inputs
  // i2_s takes multiples of 128: every layer fits.
  convert(src_.path(), out_.file("ok.gguf"), DType::I2_S);
  expect_linears(*GgufFile::open(out_.file("ok.gguf")), model_, DType::I2_S, 1e-5);
  // The f16 layers hold T * fp16(s), which TQ2_0 holds as codes and d = fp16(s).
  convert(src_.path(), out_.file("f16.gguf"), DType::F16);
  const std::vector<int32_t> ids = {1, 7, 30, 2, 5};
  auto logits = [&](const std::string& path) {
    auto m = engine::Model::load(path);
    ThreadPool pool(2);
    auto cpu = make_cpu_backend(pool);
    Session session(*m, 8, *cpu, ForwardOptions{true, nullptr});
    std::vector<float> out;
    session.eval(ids, out, true);
    return out;
  };
  EXPECT_EQ(logits(out_.file("tq2.gguf")), logits(out_.file("f16.gguf")));
  // q6_K embeddings need 256 per row.
  const std::string msg =
      error_of([&] { convert(src_.path(), out_.file("x.gguf"), DType::I2_S, DType::Q6_K); });
  EXPECT_CONTAINS(msg, "token_embd.weight");
  EXPECT_CONTAINS(msg, "256");
}

TEST_F(HfImportErrors, PackedProblems) {
  config_["quantization_config"]["linear_class"] = "bitlinear";
  config_["quantization_config"]["quantization_mode"] = "offline";
  std::vector<StEntry> es = entries(model_, Layout::PackedInverse);
  {  // code 3
    std::vector<StEntry> bad = es;
    for (StEntry& e : bad) {
      if (e.name == "model.layers.0.mlp.gate_proj.weight") e.bytes[5] = char(0xff);
    }
    const std::string msg = fail_with(bad);
    EXPECT_CONTAINS(msg, "model.layers.0.mlp.gate_proj.weight");
    EXPECT_CONTAINS(msg, "code 3");
  }
  {  // no weight_scale
    std::vector<StEntry> bad;
    for (const StEntry& e : es) {
      if (e.name != "model.layers.0.mlp.up_proj.weight_scale") bad.push_back(e);
    }
    EXPECT_CONTAINS(fail_with(bad), "model.layers.0.mlp.up_proj.weight_scale");
  }
  {  // a weight_scale of zero
    std::vector<StEntry> bad = es;
    for (StEntry& e : bad) {
      if (e.name == "model.layers.0.mlp.up_proj.weight_scale") e.bytes = bf16_bytes({0.0f});
    }
    EXPECT_CONTAINS(fail_with(bad), "weight_scale");
  }
  {  // packed rows of the wrong count
    std::vector<StEntry> bad = es;
    for (StEntry& e : bad) {
      if (e.name == "model.layers.0.self_attn.v_proj.weight") {
        e.shape = {64, 256};
        e.bytes = e.bytes + e.bytes;
      }
    }
    const std::string msg = fail_with(bad);
    EXPECT_CONTAINS(msg, "v_proj.weight");
    EXPECT_CONTAINS(msg, "expected [32, 256]");
  }
}

TEST_F(HfImportErrors, UntiedWithoutHead) {
  config_["tie_word_embeddings"] = false;
  EXPECT_CONTAINS(fail_with(es_), "lm_head.weight");
}

TEST_F(HfImportErrors, BadTypesAndFolders) {
  write_folder(src_.path(), config_, es_);
  std::string msg = error_of([&] { convert(src_.path(), out_.file("a.gguf"), DType::Q8_0); });
  EXPECT_CONTAINS(msg, "q8_0");
  msg = error_of([&] { convert(src_.path(), out_.file("a.gguf"), DType::TQ2_0, DType::TQ1_0); });
  EXPECT_CONTAINS(msg, "tq1_0");
  TempDir empty;
  write_file(empty.file("model.safetensors"), test::st_file(es_));
  msg = error_of([&] { convert(empty.path(), out_.file("a.gguf"), DType::TQ2_0); });
  EXPECT_CONTAINS(msg, "config.json");
  EXPECT_FALSE(test::file_exists(out_.file("a.gguf")));
}

TEST(HfImport, UnpackHelper) {
  // rows 0..7 of one column: byte 0 holds rows 0, 2, 4, 6; byte 1 rows 1, 3, 5, 7.
  const uint8_t packed[2] = {uint8_t(0 | 1 << 2 | 2 << 4 | 1 << 6),
                             uint8_t(2 | 2 << 2 | 0 << 4 | 0 << 6)};
  const std::vector<int8_t> t = unpack_hf_ternary(packed, 8, 1, "x");
  EXPECT_EQ(t, (std::vector<int8_t>{-1, 1, 0, 1, 1, -1, 0, -1}));
}

TEST(HfImport, TokenizerJsonIsCarried) {
  TempDir dir;
  Shape s;
  s.layers = 1;
  const HfModel m = make_model(s, false, 8);
  write_folder(dir.path(), make_config(s, "relu2", true), entries(m, Layout::F32));
  json vocab = json::object();
  const char* toks[] = {"a", "b", "c", "ab", "Ġ", "Ġa"};
  for (int i = 0; i < 6; ++i) vocab[toks[i]] = i;
  const json tok = {{"version", "1.0"},
                    {"added_tokens",
                     {{{"id", 6}, {"content", "<|begin_of_text|>"}, {"special", true}},
                      {{"id", 7}, {"content", "<|end_of_text|>"}, {"special", true}}}},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                    {"decoder", {{"type", "ByteLevel"}}},
                    {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", "Ġ a"}}}}};
  write_file(dir.file("tokenizer.json"), tok.dump());
  write_file(dir.file("tokenizer_config.json"),
             json{{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}}.dump());
  const Converted c = convert(dir.path(), dir.file("t.gguf"), DType::TQ2_0);
  EXPECT_TRUE(c.result.has_tokenizer);
  for (const std::string& w : c.warnings) EXPECT_EQ(w.find("tokenizer"), std::string::npos) << w;
  auto g = GgufFile::open(dir.file("t.gguf"));
  EXPECT_TRUE(g->has("tokenizer.ggml.model"));
  EXPECT_EQ(g->get_array("tokenizer.ggml.tokens", GgufType::STRING).size(), 8u);
}

}  // namespace
}  // namespace trit::engine
