#include "model/hparams.h"

#include "core/error.h"
#include "io/gguf.h"

namespace trit::engine {

namespace {

// The activation of a file, and why (HParams::from_gguf).
Activation decide_activation(const GgufFile& f, const HParams& hp,
                             std::optional<Activation> act_override, ActivationSource& src) {
  const std::string key = hp.arch + ".hidden_activation";
  if (act_override) {
    src.why = "set by the caller (--activation)";
    return *act_override;
  }
  if (f.has(key)) {
    const std::string& a = f.get_string(key);
    auto act = activation_from_name(a);
    if (!act) fail(f.path(), ": ", key, " is '", a, "', expected 'relu2' or 'silu'");
    src.why = "from " + key;
    return *act;
  }
  src.assumed = true;
  if (hp.family() == Family::Llama) {
    src.why = "a llama model's feed-forward is SiLU-gated";
    return Activation::Silu;
  }
  if (hp.arch == "bitnet-b1.58") {
    src.why = cat("no ", key, "; bitnet-b1.58 is bitnet.cpp's name for the 2B4T layout");
    return Activation::Relu2;
  }
  // llama.cpp writes no activation key and computes every "bitnet" file with SiLU, right for
  // the 1bitLLM family (SentencePiece vocabulary of 32000); 2B4T (llama-3 BPE vocabulary)
  // computes relu2.
  if (f.get_string_or("tokenizer.ggml.model", "") == "llama") {
    src.why = cat("no ", key,
                  "; a SentencePiece vocabulary marks the 1bitLLM family, whose feed-forward "
                  "is SiLU-gated");
    return Activation::Silu;
  }
  src.why = cat("no ", key, "; a vocabulary other than SentencePiece marks the 2B4T layout");
  return Activation::Relu2;
}

}  // namespace

std::string_view family_name(Family f) {
  return f == Family::Llama ? "Llama-architecture ternary" : "BitNet b1.58";
}

HParams HParams::from_gguf(const GgufFile& f, std::optional<Activation> act_override,
                           ActivationSource* source) {
  HParams hp;
  hp.arch = f.get_string("general.architecture");
  if (hp.arch != "bitnet" && hp.arch != "bitnet-b1.58" && hp.arch != "llama") {
    fail(f.path(), ": general.architecture is '", hp.arch,
         "', expected 'bitnet', 'bitnet-b1.58' or 'llama' (with ternary weights)");
  }
  const std::string p = hp.arch + ".";
  hp.n_layer = f.get_int(p + "block_count");
  hp.n_embd = f.get_int(p + "embedding_length");
  hp.n_ff = f.get_int(p + "feed_forward_length");
  hp.n_head = f.get_int(p + "attention.head_count");
  hp.n_head_kv =
      f.has(p + "attention.head_count_kv") ? f.get_int(p + "attention.head_count_kv") : hp.n_head;
  hp.n_ctx_train = f.has(p + "context_length") ? f.get_int(p + "context_length") : 2048;
  hp.rms_eps = f.get_f32_or(p + "attention.layer_norm_rms_epsilon", 1e-5f);
  hp.rope_theta = f.get_f32_or(p + "rope.freq_base", 10000.0f);
  // Plain rope only: llama.cpp's bitnet converter writes "linear" with factor 1 (no scaling);
  // Llama 3.1's long-context rope comes as rope_freqs.weight.
  const std::string scaling = f.get_string_or(p + "rope.scaling.type", "none");
  const float factor = f.get_f32_or(p + "rope.scaling.factor", 1.0f);
  if (!(scaling == "none" || (scaling == "linear" && factor == 1.0f))) {
    fail(f.path(), ": ", p, "rope.scaling.type is '", scaling, "' with factor ", factor,
         ": only plain rope is supported");
  }
  if (f.find_tensor("rope_freqs.weight")) {
    fail(f.path(),
         ": tensor rope_freqs.weight (rope frequency factors, as Llama 3.1 uses): only "
         "plain rope is supported");
  }
  if (hp.n_head <= 0) fail(f.path(), ": ", p, "attention.head_count must be positive");
  hp.rope_dim = f.has(p + "rope.dimension_count") ? f.get_int(p + "rope.dimension_count")
                                                  : hp.n_embd / hp.n_head;
  if (f.has(p + "vocab_size")) {
    hp.n_vocab = f.get_int(p + "vocab_size");
  } else if (f.has("tokenizer.ggml.tokens")) {
    hp.n_vocab = int64_t(f.get_array("tokenizer.ggml.tokens", GgufType::STRING).size());
  } else if (const GgufTensor* emb = f.find_tensor("token_embd.weight");
             emb && emb->ne.size() == 2) {
    hp.n_vocab = emb->ne[1];
  }
  ActivationSource src;
  hp.act = decide_activation(f, hp, act_override, src);
  if (source) *source = src;
  hp.tied_head = f.find_tensor("output.weight") == nullptr;
  hp.validate(f.path());
  return hp;
}

void HParams::write_gguf(GgufWriter& out) const {
  const std::string p = arch + ".";
  out.set_string("general.architecture", arch);
  out.set_u32(p + "vocab_size", uint32_t(n_vocab));
  out.set_u32(p + "block_count", uint32_t(n_layer));
  out.set_u32(p + "context_length", uint32_t(n_ctx_train));
  out.set_u32(p + "embedding_length", uint32_t(n_embd));
  out.set_u32(p + "feed_forward_length", uint32_t(n_ff));
  out.set_u32(p + "attention.head_count", uint32_t(n_head));
  out.set_u32(p + "attention.head_count_kv", uint32_t(n_head_kv));
  out.set_f32(p + "attention.layer_norm_rms_epsilon", rms_eps);
  out.set_f32(p + "rope.freq_base", rope_theta);
  out.set_u32(p + "rope.dimension_count", uint32_t(rope_dim));
  // llama files compute SiLU by definition and llama.cpp reads no such key for them.
  if (family() == Family::BitNet || act != Activation::Silu) {
    out.set_string(p + "hidden_activation", std::string(activation_name(act)));
  }
}

void HParams::validate(std::string_view where) const {
  if (arch != "bitnet" && arch != "bitnet-b1.58" && arch != "llama") {
    fail(where, ": architecture '", arch, "', expected bitnet, bitnet-b1.58 or llama");
  }
  auto positive = [&](int64_t v, const char* name, int64_t max) {
    if (v <= 0 || v > max) fail(where, ": ", name, " is ", v, ", expected 1..", max);
  };
  positive(n_vocab, "vocab_size", int64_t(1) << 24);
  positive(n_embd, "embedding_length", int64_t(1) << 17);
  positive(n_ff, "feed_forward_length", int64_t(1) << 19);
  positive(n_layer, "block_count", 4096);
  positive(n_head, "attention.head_count", 4096);
  positive(n_head_kv, "attention.head_count_kv", 4096);
  positive(n_ctx_train, "context_length", int64_t(1) << 24);
  if (n_embd % n_head != 0) {
    fail(where, ": embedding_length ", n_embd, " is not a multiple of head_count ", n_head);
  }
  if (n_head % n_head_kv != 0) {
    fail(where, ": head_count ", n_head, " is not a multiple of head_count_kv ", n_head_kv);
  }
  if (rope_dim <= 0 || rope_dim > head_dim() || rope_dim % 2 != 0) {
    fail(where, ": rope.dimension_count is ", rope_dim, ", expected an even number up to ",
         head_dim());
  }
  if (!(rms_eps > 0) || !(rope_theta > 0)) {
    fail(where, ": layer_norm_rms_epsilon and rope.freq_base must be positive");
  }
}

std::optional<HParams> hparams_preset(std::string_view name) {
  HParams hp;
  hp.arch = "bitnet";
  hp.act = Activation::Relu2;
  hp.tied_head = true;
  hp.rms_eps = 1e-5f;
  auto set = [&](int64_t vocab, int64_t embd, int64_t ff, int64_t layers, int64_t heads,
                 int64_t kv_heads, int64_t ctx, float theta) {
    hp.n_vocab = vocab;
    hp.n_embd = embd;
    hp.n_ff = ff;
    hp.n_layer = layers;
    hp.n_head = heads;
    hp.n_head_kv = kv_heads;
    hp.n_ctx_train = ctx;
    hp.rope_theta = theta;
    hp.rope_dim = embd / heads;
  };
  if (name == "tiny") {
    set(512, 256, 768, 2, 4, 2, 512, 10000.0f);
  } else if (name == "125m") {
    set(32000, 768, 2048, 12, 12, 12, 2048, 10000.0f);
  } else if (name == "1b") {  // 1bitLLM bitnet_b1_58-large shape with GQA
    set(32000, 2048, 5632, 24, 32, 8, 2048, 10000.0f);
  } else if (name == "2b4t") {  // microsoft/bitnet-b1.58-2B-4T
    set(128256, 2560, 6912, 30, 20, 5, 4096, 500000.0f);
  } else if (name == "7b") {
    set(32000, 4096, 11008, 32, 32, 32, 2048, 10000.0f);
  } else if (name == "13b") {
    set(32000, 5120, 13824, 40, 40, 40, 2048, 10000.0f);
  } else {
    return std::nullopt;
  }
  return hp;
}

std::vector<std::string> hparams_preset_names() {
  return {"tiny", "125m", "1b", "2b4t", "7b", "13b"};
}

std::pair<int64_t, int64_t> block_linear_shape(const HParams& hp, std::string_view what) {
  if (what == "attn_q" || what == "attn_output") return {hp.n_embd, hp.n_embd};
  if (what == "attn_k" || what == "attn_v") return {hp.n_embd, hp.n_embd_kv()};
  if (what == "ffn_gate" || what == "ffn_up") return {hp.n_embd, hp.n_ff};
  if (what == "ffn_down") return {hp.n_ff, hp.n_embd};
  fail("block_linear_shape: unknown layer '", what, "'");
}

}  // namespace trit::engine
