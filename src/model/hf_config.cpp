#include "model/hf_config.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace trit::engine {
namespace {

using nlohmann::json;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

int64_t get_int(const json& j, const std::string& where, const char* key,
                std::optional<int64_t> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (!fallback) fail(where, ": missing ", key);
    return *fallback;
  }
  if (!it->is_number_integer()) fail(where, ": ", key, " is ", it->dump(), ", expected an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)) {
    fail(where, ": ", key, " is ", it->dump(), ", too large");
  }
  return it->get<int64_t>();
}

std::optional<double> get_number(const json& j, const std::string& where, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) fail(where, ": ", key, " is ", it->dump(), ", expected a number");
  return it->get<double>();
}

std::string get_string(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Refuses rope scaling other than the plain kind (none of the BitNet models uses it).
void check_rope_kind(const json& j, const std::string& where, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) fail(where, ": ", key, " is ", it->dump(), ", expected an object");
  for (const char* k : {"rope_type", "type"}) {
    auto t = it->find(k);
    if (t != it->end() && !(t->is_string() && t->get<std::string>() == "default")) {
      fail(where, ": ", key, ".", k, " is ", t->dump(),
           ": only plain RoPE (\"default\") is supported");
    }
  }
}

}  // namespace

HfConfig read_hf_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open (a Hugging Face model folder needs a config.json)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(path, ": not a JSON object");

  const std::string model_type = get_string(j, "model_type");
  std::vector<std::string> archs;
  if (auto a = j.find("architectures"); a != j.end() && a->is_array()) {
    for (const json& x : *a) {
      if (x.is_string()) archs.push_back(x.get<std::string>());
    }
  }
  const bool bitnet_arch = std::any_of(archs.begin(), archs.end(), [](const std::string& a) {
    return lower(a).find("bitnet") != std::string::npos;
  });
  const bool llama_arch = model_type == "llama" ||
                          std::find(archs.begin(), archs.end(), "LlamaForCausalLM") != archs.end();
  const json* qc = nullptr;
  if (auto q = j.find("quantization_config"); q != j.end() && q->is_object()) qc = &*q;
  const std::string quant_method = qc ? lower(get_string(*qc, "quant_method")) : "";
  // A Llama checkpoint is ternary when transformers' BitNet quantisation runs it (Falcon3
  // 1.58-bit, Llama3-8B-1.58, Falcon-E); without that it is an ordinary float model.
  const bool ternary_llama =
      llama_arch && !bitnet_arch && model_type != "bitnet" && quant_method == "bitnet";
  if (model_type != "bitnet" && !bitnet_arch && !ternary_llama) {
    std::string list;
    for (const std::string& a : archs) list += (list.empty() ? "" : ", ") + a;
    fail(path, ": model_type '", model_type, "' with architectures [", list,
         "] is not a ternary model (expected model_type \"bitnet\", BitNetForCausalLM, or a "
         "LlamaForCausalLM with quantization_config.quant_method \"bitnet\")",
         llama_arch ? cat("; its quant_method is '", quant_method, "'") : std::string());
  }

  HfConfig c;
  HParams& hp = c.hp;
  hp.arch = ternary_llama ? "llama" : "bitnet";
  hp.n_embd = get_int(j, path, "hidden_size", std::nullopt);
  hp.n_ff = get_int(j, path, "intermediate_size", std::nullopt);
  hp.n_layer = get_int(j, path, "num_hidden_layers", std::nullopt);
  hp.n_head = get_int(j, path, "num_attention_heads", std::nullopt);
  hp.n_head_kv = get_int(j, path, "num_key_value_heads", hp.n_head);
  hp.n_vocab = get_int(j, path, "vocab_size", std::nullopt);
  hp.n_ctx_train = get_int(j, path, "max_position_embeddings", 2048);
  if (hp.n_head <= 0) fail(path, ": num_attention_heads is ", hp.n_head, ", expected > 0");
  const int64_t head_dim = get_int(j, path, "head_dim", hp.n_embd / hp.n_head);
  if (head_dim * hp.n_head != hp.n_embd) {
    fail(path, ": head_dim ", head_dim, " times num_attention_heads ", hp.n_head,
         " differs from hidden_size ", hp.n_embd, " (not supported)");
  }
  hp.rope_dim = head_dim;
  hp.rms_eps = float(get_number(j, path, "rms_norm_eps").value_or(1e-5));

  // transformers 5 writes rope_theta inside rope_parameters; older configs at the top level.
  check_rope_kind(j, path, "rope_scaling");
  check_rope_kind(j, path, "rope_parameters");
  std::optional<double> theta = get_number(j, path, "rope_theta");
  if (auto rp = j.find("rope_parameters"); !theta && rp != j.end() && rp->is_object()) {
    theta = get_number(*rp, path + ": rope_parameters", "rope_theta");
  }
  // Defaults of transformers' BitNetConfig (500000) and LlamaConfig (10000).
  hp.rope_theta = float(theta.value_or(model_type == "bitnet" ? 500000.0 : 10000.0));

  const std::string act = get_string(j, "hidden_act");
  if (act.empty()) {
    hp.act = model_type == "bitnet" ? Activation::Relu2 : Activation::Silu;
  } else if (auto a = activation_from_name(act)) {
    hp.act = *a;
  } else {
    fail(path, ": hidden_act '", act, "' is not supported (expected relu2 or silu)");
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (auto it = j.find(key); it != j.end() && it->is_boolean() && it->get<bool>()) {
      fail(path, ": ", key, " is true: linear layers with biases are not supported");
    }
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && it->is_boolean()) {
    c.tie = it->get<bool>();
  }
  if (qc) {
    c.linear_class = lower(get_string(*qc, "linear_class"));
    const std::string mode = lower(get_string(*qc, "quantization_mode"));
    if (c.linear_class == "autobitlinear" && mode == "offline") {
      c.scale_meaning = HfScaleMeaning::Multiplier;
    }
    // An RMSNorm inside every BitLinear (newer transformers' use_rms_norm) is a different
    // block than the ones trit computes: refused rather than run wrong.
    if (auto it = qc->find("use_rms_norm");
        it != qc->end() && it->is_boolean() && it->get<bool>()) {
      fail(path,
           ": quantization_config.use_rms_norm is true: a norm inside every linear layer "
           "is not supported");
    }
    // transformers keeps lm_head (always) and these modules as float nn.Linear layers; trit's
    // block layers are all ternary.
    if (auto it = qc->find("modules_to_not_convert"); it != qc->end() && it->is_array()) {
      for (const json& m : *it) {
        if (!m.is_string()) continue;
        const std::string name = m.get<std::string>();
        if (name == "lm_head" || name.empty()) continue;
        for (const char* layer : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                  "down_proj", "self_attn", "mlp", "layers"}) {
          if (name.find(layer) != std::string::npos) {
            fail(path, ": quantization_config.modules_to_not_convert lists '", name,
                 "': float layers inside the blocks are not supported");
          }
        }
      }
    }
  }
  return c;
}

HParams hf_config_to_hparams(const std::string& config_path, bool has_lm_head) {
  HfConfig c = read_hf_config(config_path);
  c.hp.tied_head = c.tie.value_or(!has_lm_head);
  c.hp.validate(config_path);
  return c.hp;
}

}  // namespace trit::engine
