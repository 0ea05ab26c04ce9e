#include "tools/convert.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/quant.h"
#include "core/shape.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/hf_config.h"
#include "model/llama_layout.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

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
  bool permute_rows = false;  // W_q, W_k of a llama file (model/llama_layout.h)
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
  std::string odd_width_;  // the first linear layer whose width opt_.type cannot hold
  int64_t n_odd_width_ = 0;
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
  j.permute_rows = rows_permuted_in_file(cfg_.hp, what);
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
    // AutoBitLinear offline keeps float ternary codes and multiplies by weight_scale.
    if (const StTensor* ws = st_.find(scale_name)) {
      if (cfg_.scale_meaning != HfScaleMeaning::Multiplier) {
        fail(where(scale_name),
             ": float weights with a weight_scale need quantization_config "
             "linear_class \"autobitlinear\" and quantization_mode \"offline\"");
      }
      if (ws->n_elements() != 1 || !is_float(ws->dtype)) {
        fail(where(scale_name), ": expected one float element, found ", st_dtype_name(ws->dtype),
             " ", shape_text(ws->shape));
      }
      j.scale = ws;
      used_.insert(scale_name);
    }
  } else {
    fail(where(name), ": dtype ", st_dtype_name(j.src->dtype),
         ", expected float master weights (F32, F16, BF16) or packed U8 codes");
  }
  if (!tensor_bytes(j.type, n_in, n_in * n_out)) {
    // A width the packed type cannot hold (1bitLLM's 3B: 3200, 8640): the ternary values as
    // f16, as llama.cpp's converter writes them, which the loader packs (padded) exactly.
    if (odd_width_.empty()) odd_width_ = cat(j.gguf_name, ", ", n_in, " inputs");
    ++n_odd_width_;
    j.type = DType::F16;
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
    // ffn_layernorm; a llama block has none.
    if (hp.sub_norms()) {
      add_norm(block_tensor_name(l, "attn_sub_norm"),
               {p + "self_attn.attn_sub_norm.weight", p + "self_attn.inner_attn_ln.weight"},
               hp.n_embd);
    }
    add_norm(block_tensor_name(l, "ffn_norm"), {p + "post_attention_layernorm.weight"}, hp.n_embd);
    add_linear(l, "ffn_gate", p + "mlp.gate_proj.weight");
    add_linear(l, "ffn_up", p + "mlp.up_proj.weight");
    add_linear(l, "ffn_down", p + "mlp.down_proj.weight");
    if (hp.sub_norms()) {
      add_norm(block_tensor_name(l, "ffn_sub_norm"),
               {p + "mlp.ffn_sub_norm.weight", p + "mlp.ffn_layernorm.weight"}, hp.n_ff);
    }
  }
  if (n_odd_width_ > 0 && dtype_traits(opt_.type).ternary) {
    const int64_t block = opt_.type == DType::I2_S ? kI2SRun : dtype_traits(opt_.type).block_elems;
    warn(cat(n_odd_width_, " linear layer", n_odd_width_ > 1 ? "s" : "", " (", odd_width_,
             n_odd_width_ > 1 ? ", ..." : "", ") have widths that are not a multiple of ", block,
             ", which ", dtype_name(opt_.type),
             " needs: written as f16 ternary values, exact, packed when loaded"));
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
  auto read_weight_scale = [&] {
    float ws = 0;
    job.scale->read_f32(0, 1, &ws, st_.file_of(job.src_name));
    if (!std::isfinite(ws) || ws <= 0) {
      fail(where(job.src_name.substr(0, job.src_name.size() - 6) + "weight_scale"), ": value ", ws,
           ", expected a positive number");
    }
    return ws;
  };
  if (job.scale != nullptr && !is_float(job.src->dtype)) {
    trits = unpack_hf_ternary(job.src->data, job.n_out, job.n_in, where(job.src_name));
    const float ws = read_weight_scale();
    scale = cfg_.scale_meaning == HfScaleMeaning::Inverse ? 1.0f / ws : ws;
  } else {
    const std::vector<float> v = job.src->to_f32(file);
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(v[size_t(i)])) {
        fail(where(job.src_name), ": element ", i, " is ", v[size_t(i)]);
      }
    }
    trits.resize(size_t(n));
    if (job.scale != nullptr) {
      // Offline AutoBitLinear: y = (x_q . W) * weight_scale, W ternary already; any other W
      // is not a ternary layer.
      const std::optional<float> m = ternary_magnitude(v.data(), n);
      if (!m) {
        fail(where(job.src_name),
             ": float weights beside a weight_scale must be ternary "
             "(values -m, 0, +m), and these are not");
      }
      ternarize(v.data(), n, trits.data());
      scale = *m * read_weight_scale();
    } else {
      scale = absmean_ternarize(v.data(), n, trits.data());
    }
  }
  if (job.permute_rows) {
    std::vector<uint8_t> rows =
        reorder_rows(reinterpret_cast<const uint8_t*>(trits.data()), trits.size(), job.n_out,
                     size_t(job.n_in), cfg_.hp.head_dim(), RowOrder::HfToFile);
    std::memcpy(trits.data(), rows.data(), rows.size());
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
  cfg_ = read_hf_config(config_path);
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

}  // namespace trit::engine
