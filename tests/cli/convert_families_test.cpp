// `trit convert` with no --type, end to end, on a small Hugging Face folder of every model family
// trit runs, laid out as each publisher lays it out; `trit info` names the family and the
// activation and why, and `trit logits` runs the result. (The numbers are checked elsewhere:
// tools/convert_test.cpp for the tensors, cli/hf_reference_test.cpp against transformers.)
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/cli.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/safetensors_builder.h"

namespace trit::engine {
namespace {

using nlohmann::json;
using test::StEntry;

struct Family {
  const char* name;
  json config;
  int64_t hidden, ff;
  bool sub_norms;
  const char* sub_attn;  // the sub-norms' names
  const char* sub_ffn;
  bool packed;         // uint8 codes + an inverse weight_scale, else f32 master weights
  const char* family;  // what `trit info` says
  const char* activation;
};

json base_config(const char* model_type, const char* arch, const char* act, int64_t hidden,
                 int64_t ff) {
  return {
      {"model_type", model_type},    {"architectures", {arch}}, {"hidden_size", hidden},
      {"intermediate_size", ff},     {"num_hidden_layers", 1},  {"num_attention_heads", 4},
      {"num_key_value_heads", 2},    {"vocab_size", 64},        {"max_position_embeddings", 256},
      {"rms_norm_eps", 1e-5},        {"rope_theta", 10000.0},   {"hidden_act", act},
      {"tie_word_embeddings", false}};
}

// The folder's tensors: norms of ones, random embeddings, linear layers as master weights or
// packed codes.
std::vector<StEntry> tensors(const Family& f) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto floats = [&](int64_t n, bool ones) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = ones ? 1.0f : nd(rng);
    return v;
  };
  const int64_t d = f.hidden, ff = f.ff, kv = d / 4 * 2, vocab = 64;
  std::vector<StEntry> es = {
      {"model.embed_tokens.weight", "F32", {vocab, d}, test::f32_bytes(floats(vocab * d, false))},
      {"lm_head.weight", "F32", {vocab, d}, test::f32_bytes(floats(vocab * d, false))},
      {"model.norm.weight", "F32", {d}, test::f32_bytes(floats(d, true))}};
  const std::string p = "model.layers.0.";
  for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
    es.push_back({p + norm + ".weight", "F32", {d}, test::f32_bytes(floats(d, true))});
  }
  if (f.sub_norms) {
    es.push_back({p + f.sub_attn + ".weight", "F32", {d}, test::f32_bytes(floats(d, true))});
    es.push_back({p + f.sub_ffn + ".weight", "F32", {ff}, test::f32_bytes(floats(ff, true))});
  }
  const std::pair<const char*, std::pair<int64_t, int64_t>> linears[] = {
      {"self_attn.q_proj", {d, d}}, {"self_attn.k_proj", {kv, d}}, {"self_attn.v_proj", {kv, d}},
      {"self_attn.o_proj", {d, d}}, {"mlp.gate_proj", {ff, d}},    {"mlp.up_proj", {ff, d}},
      {"mlp.down_proj", {d, ff}}};
  for (const auto& [name, shape] : linears) {
    const auto [n_out, n_in] = shape;
    if (!f.packed) {
      es.push_back({p + name + ".weight",
                    "F32",
                    {n_out, n_in},
                    test::f32_bytes(floats(n_out * n_in, false))});
      continue;
    }
    std::vector<uint8_t> codes(static_cast<size_t>(n_out / 4 * n_in));
    for (uint8_t& c : codes) {  // four codes of {0, 1, 2} (trits + 1)
      c = uint8_t(rng() % 3 | (rng() % 3) << 2 | (rng() % 3) << 4 | (rng() % 3) << 6);
    }
    es.push_back({p + name + ".weight", "U8", {n_out / 4, n_in}, test::raw_bytes(codes)});
    es.push_back({p + name + ".weight_scale", "BF16", {1}, test::bf16_bytes({8.0f})});
  }
  return es;
}

TEST(ConvertFamilies, DefaultTypeConvertsEveryFamilyAndInfoNamesIt) {
  json bitnet_packed = base_config("bitnet", "BitNetForCausalLM", "relu2", 256, 512);
  bitnet_packed["quantization_config"] = {
      {"quant_method", "bitnet"}, {"linear_class", "bitlinear"}, {"quantization_mode", "offline"}};
  json falcon3 = base_config("llama", "LlamaForCausalLM", "silu", 256, 512);
  falcon3["quantization_config"] = {{"quant_method", "bitnet"},
                                    {"modules_to_not_convert", nullptr}};
  json falcon_e = base_config("llama", "LlamaForCausalLM", "silu", 256, 768);
  falcon_e["quantization_config"] = {{"quant_method", "bitnet"},
                                     {"linear_class", "autobitlinear"},
                                     {"quantization_mode", "online"}};
  const Family families[] = {
      {"bitnet-2b4t-packed", bitnet_packed, 256, 512, true, "self_attn.attn_sub_norm",
       "mlp.ffn_sub_norm", true, "BitNet b1.58", "relu2 (from bitnet.hidden_activation)"},
      // 1bitLLM's 3B in small: widths that are not a multiple of 256, its own names
      {"1bitllm-odd-widths", base_config("llama", "BitnetForCausalLM", "silu", 320, 864), 320, 864,
       true, "self_attn.inner_attn_ln", "mlp.ffn_layernorm", false, "BitNet b1.58",
       "silu (from bitnet.hidden_activation)"},
      {"falcon3-1.58bit", falcon3, 256, 512, false, "", "", true, "Llama-architecture ternary",
       "silu (a llama model's feed-forward is SiLU-gated)"},
      {"falcon-e-online", falcon_e, 256, 768, false, "", "", false, "Llama-architecture ternary",
       "silu (a llama model's feed-forward is SiLU-gated)"},
  };
  for (const Family& f : families) {
    SCOPED_TRACE(f.name);
    test::TempDir dir;
    const std::string src = dir.file(f.name);
    std::filesystem::create_directories(src);
    test::write_file(src + "/config.json", f.config.dump(2));
    test::write_file(src + "/model.safetensors", test::st_file(tensors(f), {{"format", "pt"}}));
    const std::string out = dir.file("m.gguf");
    test::RunResult r = test::run_trit(dir, {"convert", src, "-o", out});
    ASSERT_EQ(r.rc, 0) << r.err;
    r = test::run_trit(dir, {"info", out});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_CONTAINS(r.out, std::string("family:        ") + f.family);
    EXPECT_CONTAINS(r.out, std::string("activation:    ") + f.activation);
    for (const char* device : {"cpu", "auto"}) {
      r = test::run_trit(dir, {"logits", "-m", out, "--ids", "1,5,9,2", "-o", dir.file("l.f32"),
                               "--device", device});
      ASSERT_EQ(r.rc, 0) << device << ": " << r.err;
      EXPECT_EQ(test::read_file(dir.file("l.f32")).size(), size_t(4 * 64 * 4));
    }
  }
}

}  // namespace
}  // namespace trit::engine
