#include "io/hf_import.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/quant.h"
#include "core/shape.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace trit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What weight_scale means in the packed layout. Settled on the reference machine
// (tools/hf_reference.py, transformers 5.17): a float model was exported packed and loaded back
// through transformers under both readings and both linear classes.
//  - linear_class "bitlinear" (BitLinear; the class microsoft/bitnet-b1.58-2B-4T's config names,
//    with quantization_mode "offline"): BitLinear computes y = (T . q(x)) / (weight_scale * s_x),
//    so weight_scale = 1 / mean|W| (a divisor). Stored that way the packed model reproduced the
//    float model's logits to 5e-6 (max abs); stored as mean|W| it was off by 1.4 (relative).
//    llama.cpp's converter reads it the same way ("The scale is inverted": W = T / weight_scale).
//  - linear_class "autobitlinear" with quantization_mode "offline": AutoBitLinear computes
//    y = (T . x_q) * weight_scale, so there weight_scale = mean|W| (a multiplier): that reading
//    reproduced the float model exactly, the inverse one was off by 1.4.
enum class ScaleMeaning { Inverse, Multiplier };

struct HfConfig {
  HParams hp;
  std::optional<bool> tie;  // tie_word_embeddings when given
  ScaleMeaning scale_meaning = ScaleMeaning::Inverse;
  std::string linear_class;
};

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

HfConfig read_config(const std::string& path) {
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
  if (model_type != "bitnet" && !bitnet_arch) {
    std::string list;
    for (const std::string& a : archs) list += (list.empty() ? "" : ", ") + a;
    fail(path, ": model_type '", model_type, "' with architectures [", list,
         "] is not a BitNet b1.58 model (expected model_type \"bitnet\" or BitNetForCausalLM)");
  }

  HfConfig c;
  HParams& hp = c.hp;
  hp.arch = "bitnet";
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
  if (auto q = j.find("quantization_config"); q != j.end() && q->is_object()) {
    c.linear_class = lower(get_string(*q, "linear_class"));
    const std::string mode = lower(get_string(*q, "quantization_mode"));
    if (c.linear_class == "autobitlinear" && mode == "offline") {
      c.scale_meaning = ScaleMeaning::Multiplier;
    }
  }
  return c;
}

bool is_float(StDType t) {
  return t == StDType::F32 || t == StDType::F16 || t == StDType::BF16 || t == StDType::F64;
}

uint32_t file_type_of(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::BF16:
      return 32;
    case DType::TQ1_0:
      return 36;  // llama.cpp LLAMA_FTYPE_MOSTLY_TQ1_0
    case DType::TQ2_0:
      return 37;  // LLAMA_FTYPE_MOSTLY_TQ2_0
    case DType::I2_S:
      return 40;  // bitnet.cpp's I2_S files
    default:
      return 0;
  }
}

enum class Kind { Norm, Embedding, Linear };

struct Job {
  std::string gguf_name;
  Kind kind = Kind::Norm;
  std::string src_name;
  const StTensor* src = nullptr;
  const StTensor* scale = nullptr;  // packed linear layers: the one-element weight_scale
  int64_t n_in = 0;                 // ne[0]
  int64_t n_out = 1;                // ne[1] (1 for norms)
  DType type = DType::F32;
};

class Converter {
 public:
  explicit Converter(const HfConvertOptions& opt) : opt_(opt) {}
  HfConvertResult run();

 private:
  void warn(const std::string& msg) const {
    if (opt_.warn) opt_.warn(msg);
  }
  std::string where(const std::string& tensor) const {
    return cat(st_.file_of(tensor), ": tensor ", tensor);
  }
  const std::string* find_any(const std::vector<std::string>& names) const;
  std::string need_any(const std::vector<std::string>& names);
  void plan();
  void add_norm(const std::string& gguf_name, const std::vector<std::string>& hf, int64_t n);
  void add_embedding(const std::string& gguf_name, const std::string& hf);
  void add_linear(int64_t layer, const std::string& what, const std::string& hf);
  void check_shape(const std::string& name, const StTensor& t, std::vector<int64_t> expected);
  void write_job(const Job& job, GgufWriter& w);
  void write_linear(const Job& job, GgufWriter& w);

  const HfConvertOptions& opt_;
  HfConfig cfg_;
  SafetensorsSet st_;
  std::vector<Job> jobs_;
  std::set<std::string> used_;
  std::vector<std::string> missing_;
  bool packed_ = false;
  DType embd_type_ = DType::F16;
};

const std::string* Converter::find_any(const std::vector<std::string>& names) const {
  for (const std::string& n : names) {
    if (st_.find(n)) return &n;
  }
  return nullptr;
}

// The first of the names present; records all as missing (for one error listing every missing
// tensor) when none is.
std::string Converter::need_any(const std::vector<std::string>& names) {
  if (const std::string* n = find_any(names)) {
    used_.insert(*n);
    return *n;
  }
  std::string alt = names[0];
  for (size_t i = 1; i < names.size(); ++i) alt += " (or " + names[i] + ")";
  missing_.push_back(alt);
  return {};
}

void Converter::check_shape(const std::string& name, const StTensor& t,
                            std::vector<int64_t> expected) {
  if (t.shape != expected) {
    fail(where(name), ": shape ", shape_text(t.shape), ", expected ", shape_text(expected),
         " from config.json");
  }
}

void Converter::add_norm(const std::string& gguf_name, const std::vector<std::string>& hf,
                         int64_t n) {
  const std::string name = need_any(hf);
  if (name.empty()) return;
  Job j;
  j.gguf_name = gguf_name;
  j.kind = Kind::Norm;
  j.src_name = name;
  j.src = &st_.get(name);
  j.n_in = n;
  j.type = DType::F32;
  check_shape(name, *j.src, {n});
  if (!is_float(j.src->dtype)) {
    fail(where(name), ": dtype ", st_dtype_name(j.src->dtype), ", expected a float type");
  }
  jobs_.push_back(j);
}

void Converter::add_embedding(const std::string& gguf_name, const std::string& hf) {
  const std::string name = need_any({hf});
  if (name.empty()) return;
  const HParams& hp = cfg_.hp;
  Job j;
  j.gguf_name = gguf_name;
  j.kind = Kind::Embedding;
  j.src_name = name;
  j.src = &st_.get(name);
  j.n_in = hp.n_embd;
  j.n_out = hp.n_vocab;
  j.type = embd_type_;
  check_shape(name, *j.src, {hp.n_vocab, hp.n_embd});
  if (!is_float(j.src->dtype)) {
    fail(where(name), ": dtype ", st_dtype_name(j.src->dtype), ", expected a float type");
  }
  if (!tensor_bytes(j.type, j.n_in, j.n_in * j.n_out)) {
    fail(gguf_name, ": ", j.n_in, " values per row are not a multiple of ",
         dtype_traits(j.type).block_elems, ", which ", dtype_name(j.type),
         " needs; choose another embedding type (f16)");
  }
  jobs_.push_back(j);
}

void Converter::add_linear(int64_t layer, const std::string& what, const std::string& hf) {
  const std::string name = need_any({hf});
  if (name.empty()) return;
  const auto [n_in, n_out] = block_linear_shape(cfg_.hp, what);
  Job j;
  j.gguf_name = block_tensor_name(layer, what);
  j.kind = Kind::Linear;
  j.src_name = name;
  j.src = &st_.get(name);
  j.n_in = n_in;
  j.n_out = n_out;
  j.type = opt_.type;
  const std::string scale_name =
      name.substr(0, name.size() - std::string("weight").size()) + "weight_scale";
  if (j.src->dtype == StDType::U8 || j.src->dtype == StDType::I8) {
    // The packed 2B4T layout: (out / 4, in) bytes of four 2-bit codes, and weight_scale.
    if (n_out % 4 != 0)
      fail(where(name), ": packed layout needs a multiple of 4 rows, not ", n_out);
    check_shape(name, *j.src, {n_out / 4, n_in});
    j.scale = st_.find(scale_name);
    if (j.scale == nullptr) {
      fail(where(name), ": packed ", st_dtype_name(j.src->dtype), " weights need ", scale_name,
           ", which is missing");
    }
    used_.insert(scale_name);
    if (j.scale->n_elements() != 1 || !is_float(j.scale->dtype)) {
      fail(where(scale_name), ": expected one float element, found ", st_dtype_name(j.scale->dtype),
           " ", shape_text(j.scale->shape));
    }
    packed_ = true;
  } else if (is_float(j.src->dtype)) {
    check_shape(name, *j.src, {n_out, n_in});
  } else {
    fail(where(name), ": dtype ", st_dtype_name(j.src->dtype),
         ", expected float master weights (F32, F16, BF16) or packed U8 codes");
  }
  if (!tensor_bytes(j.type, n_in, n_in * n_out)) {
    const int64_t block = j.type == DType::I2_S ? kI2SRun : dtype_traits(j.type).block_elems;
    std::string hint = j.type == DType::I2_S ? "f16" : (n_in % kI2SRun == 0 ? "i2_s" : "f16");
    fail(j.gguf_name, ": ", n_in, " inputs per row are not a multiple of ", block, ", which ",
         dtype_name(j.type), " needs; try --type ", hint);
  }
  jobs_.push_back(j);
}

void Converter::plan() {
  const HParams& hp = cfg_.hp;
  add_embedding("token_embd.weight", "model.embed_tokens.weight");
  if (!hp.tied_head) add_embedding("output.weight", "lm_head.weight");
  add_norm("output_norm.weight", {"model.norm.weight"}, hp.n_embd);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = cat("model.layers.", l, ".");
    add_norm(block_tensor_name(l, "attn_norm"), {p + "input_layernorm.weight"}, hp.n_embd);
    add_linear(l, "attn_q", p + "self_attn.q_proj.weight");
    add_linear(l, "attn_k", p + "self_attn.k_proj.weight");
    add_linear(l, "attn_v", p + "self_attn.v_proj.weight");
    add_linear(l, "attn_output", p + "self_attn.o_proj.weight");
    // 2B4T spells the sub-norms attn_sub_norm / ffn_sub_norm, 1bitLLM inner_attn_ln /
    // ffn_layernorm.
    add_norm(block_tensor_name(l, "attn_sub_norm"),
             {p + "self_attn.attn_sub_norm.weight", p + "self_attn.inner_attn_ln.weight"},
             hp.n_embd);
    add_norm(block_tensor_name(l, "ffn_norm"), {p + "post_attention_layernorm.weight"}, hp.n_embd);
    add_linear(l, "ffn_gate", p + "mlp.gate_proj.weight");
    add_linear(l, "ffn_up", p + "mlp.up_proj.weight");
    add_linear(l, "ffn_down", p + "mlp.down_proj.weight");
    add_norm(block_tensor_name(l, "ffn_sub_norm"),
             {p + "mlp.ffn_sub_norm.weight", p + "mlp.ffn_layernorm.weight"}, hp.n_ff);
  }
  if (!missing_.empty()) {
    std::string list;
    const size_t shown = std::min<size_t>(missing_.size(), 4);
    for (size_t i = 0; i < shown; ++i) list += (i ? ", " : "") + missing_[i];
    if (missing_.size() > shown) list += cat(" and ", missing_.size() - shown, " more");
    fail(opt_.src_dir, ": missing tensor", missing_.size() > 1 ? "s " : " ", list);
  }
}

void Converter::write_job(const Job& job, GgufWriter& w) {
  const std::string& file = st_.file_of(job.src_name);
  try {
    if (job.kind == Kind::Norm) {
      const std::vector<float> v = job.src->to_f32(file);
      w.append(v.data(), v.size() * sizeof(float));
    } else if (job.kind == Kind::Embedding) {
      // Row by row in pieces of about 16M values: every embedding type is row-wise.
      const int64_t rows_per_piece = std::max<int64_t>(1, (int64_t(1) << 24) / job.n_in);
      std::vector<float> buf;
      for (int64_t r = 0; r < job.n_out; r += rows_per_piece) {
        const int64_t rows = std::min(rows_per_piece, job.n_out - r);
        buf.resize(size_t(rows * job.n_in));
        job.src->read_f32(r * job.n_in, rows * job.n_in, buf.data(), file);
        if (job.type == DType::F32) {
          w.append(buf.data(), buf.size() * sizeof(float));
        } else {
          const std::vector<uint8_t> q = quantize(job.type, buf.data(), rows * job.n_in);
          w.append(q.data(), q.size());
        }
      }
    } else {
      write_linear(job, w);
    }
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find(job.src_name) != std::string::npos) throw;
    fail(file, ": tensor ", job.src_name, " (", job.gguf_name, "): ", msg);
  }
}

void Converter::write_linear(const Job& job, GgufWriter& w) {
  const std::string& file = st_.file_of(job.src_name);
  const int64_t n = job.n_in * job.n_out;
  std::vector<int8_t> trits;
  float scale = 0;
  if (job.scale != nullptr) {
    trits = unpack_hf_ternary(job.src->data, job.n_out, job.n_in, where(job.src_name));
    float ws = 0;
    job.scale->read_f32(0, 1, &ws, st_.file_of(job.src_name));
    if (!std::isfinite(ws) || ws <= 0) {
      fail(where(job.src_name.substr(0, job.src_name.size() - 6) + "weight_scale"), ": value ", ws,
           ", expected a positive number");
    }
    scale = cfg_.scale_meaning == ScaleMeaning::Inverse ? 1.0f / ws : ws;
  } else {
    const std::vector<float> v = job.src->to_f32(file);
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(v[size_t(i)])) {
        fail(where(job.src_name), ": element ", i, " is ", v[size_t(i)]);
      }
    }
    trits.resize(size_t(n));
    scale = absmean_ternarize(v.data(), n, trits.data());
  }
  if (dtype_traits(job.type).ternary) {
    const std::vector<uint8_t> packed = pack_ternary(job.type, trits.data(), n, scale);
    w.append(packed.data(), packed.size());
  } else {
    // Float output holds the ternary weights as floats, T * scale, as llama.cpp's BitNet
    // converter writes them: a plain matrix product with them gives the BitNet result.
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(trits[size_t(i)]) * scale;
    const std::vector<uint8_t> q = quantize(job.type, v.data(), n);
    w.append(q.data(), q.size());
  }
}

HfConvertResult Converter::run() {
  const fs::path dir(opt_.src_dir);
  const DType t = opt_.type;
  if (t != DType::TQ1_0 && t != DType::TQ2_0 && t != DType::I2_S && t != DType::F16 &&
      t != DType::BF16 && t != DType::F32) {
    fail("convert: type ", dtype_name(t),
         " is not a type for the linear layers; use tq1_0, tq2_0, i2_s or f16");
  }
  embd_type_ = opt_.embd_type.value_or(DType::F16);
  if (dtype_traits(embd_type_).ternary) {
    fail("convert: type ", dtype_name(embd_type_),
         " is not a type for the embeddings; use f16, bf16, f32, q8_0 or q6_K");
  }

  const std::string config_path = (dir / "config.json").string();
  cfg_ = read_config(config_path);
  st_ = SafetensorsSet::open_folder(opt_.src_dir);
  HParams& hp = cfg_.hp;
  const bool has_head = st_.find("lm_head.weight") != nullptr;
  hp.tied_head = cfg_.tie.value_or(!has_head);
  hp.validate(config_path);
  if (hp.tied_head && has_head) {
    used_.insert("lm_head.weight");
    warn(cat(config_path, ": tie_word_embeddings is true: lm_head.weight is ignored"));
  }
  plan();

  std::vector<std::string> unused;
  for (const std::string& name : st_.names()) {
    if (!used_.count(name) && name.find("rotary_emb.inv_freq") == std::string::npos) {
      unused.push_back(name);
    }
  }
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(unused.size(), 3); ++i) {
      list += (i ? ", " : "") + unused[i];
    }
    warn(cat(opt_.src_dir, ": ", unused.size(), " tensor", unused.size() > 1 ? "s" : "",
             " not used: ", list, unused.size() > 3 ? ", ..." : ""));
  }

  GgufWriter w;
  hp.write_gguf(w);
  std::string name = dir.filename().string();
  if (name.empty() || name == ".") name = dir.parent_path().filename().string();
  if (!name.empty()) w.set_string("general.name", name);
  w.set_u32("general.file_type", file_type_of(opt_.type));
  if (dtype_traits(opt_.type).ternary) w.set_u32("general.quantization_version", 2);

  HfConvertResult result;
  const fs::path tok = dir / "tokenizer.json";
  std::error_code ec;
  if (fs::exists(tok, ec)) {
    const fs::path tok_cfg = dir / "tokenizer_config.json";
    tokenizer_json_to_gguf(tok.string(), fs::exists(tok_cfg, ec) ? tok_cfg.string() : "", w);
    result.has_tokenizer = true;
  } else {
    warn(cat("no tokenizer.json in ", opt_.src_dir, ": the model is usable with --ids only"));
  }

  for (const Job& j : jobs_) {
    w.add_tensor(j.gguf_name, j.type,
                 j.kind == Kind::Norm ? std::vector<int64_t>{j.n_in}
                                      : std::vector<int64_t>{j.n_in, j.n_out});
    result.tensors_per_type[std::string(dtype_name(j.type))]++;
  }
  w.begin(opt_.out_path);
  for (const Job& j : jobs_) write_job(j, w);
  w.finish();

  result.hp = hp;
  result.n_tensors = jobs_.size();
  result.packed_source = packed_;
  result.file_bytes = uint64_t(fs::file_size(opt_.out_path, ec));
  return result;
}

}  // namespace

HParams hf_config_to_hparams(const std::string& config_path, bool has_lm_head) {
  HfConfig c = read_config(config_path);
  c.hp.tied_head = c.tie.value_or(!has_lm_head);
  c.hp.validate(config_path);
  return c.hp;
}

std::vector<int8_t> unpack_hf_ternary(const uint8_t* packed, int64_t n_out, int64_t n_in,
                                      const std::string& where) {
  if (n_out % 4 != 0) fail(where, ": packed layout needs a multiple of 4 rows, not ", n_out);
  const int64_t rows = n_out / 4;
  std::vector<int8_t> trits(static_cast<size_t>(n_out * n_in));
  for (int64_t i = 0; i < rows; ++i) {
    const uint8_t* src = packed + i * n_in;
    for (int j = 0; j < 4; ++j) {
      int8_t* dst = trits.data() + (i + j * rows) * n_in;
      for (int64_t k = 0; k < n_in; ++k) {
        const int code = (src[k] >> (2 * j)) & 3;
        if (code == 3) {
          fail(where, ": byte [", i, ", ", k, "] holds the unused code 3 (row ", i + j * rows, ")");
        }
        dst[k] = int8_t(code - 1);
      }
    }
  }
  return trits;
}

HfConvertResult convert_hf_model(const HfConvertOptions& options) {
  Converter c(options);
  return c.run();
}

}  // namespace trit
