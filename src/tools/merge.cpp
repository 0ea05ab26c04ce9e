#include "tools/merge.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <system_error>

#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "core/shape.h"
#include "core/tensor_names.h"
#include "core/thread_pool.h"
#include "io/adapter_gguf.h"
#include "io/file_util.h"
#include "io/gguf.h"
#include "model/embedded_adapter.h"
#include "model/hparams.h"
#include "model/llama_layout.h"
#include "model/lora_set.h"

namespace trit::engine {
namespace {

constexpr std::string_view kKeyAlpha = kEmbeddedAlphaKey;
constexpr std::string_view kKeyRslora = kEmbeddedRsloraKey;
constexpr std::string_view kKeyScale = kEmbeddedScaleKey;
constexpr std::string_view kKeyMergedAdapters = "trit.merged_adapters";
constexpr int64_t kChunkValues = int64_t(1) << 20;  // floats of one chunk of merged rows

bool is_lora_tensor(std::string_view name) {
  return name.ends_with(kLoraSuffixA) || name.ends_with(kLoraSuffixB);
}

bool is_adapter_key(std::string_view key) {
  return key == kKeyAlpha || key == kKeyRslora || key == kKeyScale;
}

bool is_float_type(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

std::string source_label(const MergeSource& s) {
  return s.scale == 1.0f ? s.name : cat(s.name, ":", s.scale);
}

// Several adapters as one (merge.h, attach mode): ranks concatenated, scales folded into B.
LoraAdapter fold_adapters(const std::vector<MergeSource>& sources, const HParams& hp) {
  struct Part {
    const LoraLayer* layer;
    float scale;  // user scale * alpha / r
  };
  std::map<std::string, std::vector<Part>> parts;
  for (const MergeSource& s : sources) {
    for (const auto& [name, layer] : s.adapter->layers) {
      parts[name].push_back({&layer, s.scale * s.adapter->scaling(layer.rank)});
    }
  }
  int64_t r_max = 0;
  for (const auto& [name, ps] : parts) {
    int64_t r = 0;
    for (const Part& p : ps) r += p.layer->rank;
    r_max = std::max(r_max, r);
  }
  LoraAdapter out;
  out.base_arch = hp.arch;
  out.alpha = float(r_max);
  out.rslora = false;
  for (const auto& [name, ps] : parts) {
    LoraLayer L;
    L.n_in = ps.front().layer->n_in;
    L.n_out = ps.front().layer->n_out;
    for (const Part& p : ps) L.rank += p.layer->rank;
    const int64_t R = L.rank;
    L.a.reserve(size_t(R * L.n_in));
    L.b.assign(size_t(L.n_out * R), 0.0f);
    int64_t off = 0;
    for (const Part& p : ps) {
      const LoraLayer& src = *p.layer;
      L.a.insert(L.a.end(), src.a.begin(), src.a.end());  // (rank, n_in) rows stacked
      const float c = p.scale * float(R) / float(r_max);
      for (int64_t o = 0; o < L.n_out; ++o) {
        for (int64_t k = 0; k < src.rank; ++k) {
          L.b[size_t(o * R + off + k)] = c * src.b[size_t(o * src.rank + k)];
        }
      }
      off += src.rank;
    }
    out.layers.emplace(name, std::move(L));
  }
  return out;
}

// How a tensor of the output is produced.
enum class Produce { Copy, Merge, Ternarise, AdapterA, AdapterB };

struct OutTensor {
  std::string name;
  DType type = DType::F32;
  std::vector<int64_t> ne;
  Produce how = Produce::Copy;
  const GgufTensor* src = nullptr;               // Copy, Merge (the base weight), Ternarise
  const std::vector<LoraTerm>* terms = nullptr;  // Merge
  float out_scale = 1.0f;                        // Merge: the base's `.scale`
  const LoraLayer* lora = nullptr;               // AdapterA / AdapterB
  // Merge into a llama file's W_q or W_k: file rows are permuted (model/llama_layout.h), the
  // adapters' rows are not; the head dimension, else 0.
  int64_t permuted_head_dim = 0;
};

// Effective weights of rows [r0, r1) of a linear layer or the head into out ((r1 - r0), n_in):
// what the forward pass multiplies by, before out_scale. `ternarised` holds the TQ2_0 bytes of
// a float master weight (the loader's ternarisation), else it is empty.
void effective_rows(const GgufTensor& t, const std::vector<uint8_t>& ternarised, int64_t r0,
                    int64_t r1, float* out) {
  const int64_t n_in = t.ne[0];
  if (!ternarised.empty()) {
    const int64_t rb = row_bytes(DType::TQ2_0, n_in);
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row(DType::TQ2_0, ternarised.data() + r * rb, n_in, out + (r - r0) * n_in);
    }
    return;
  }
  if (t.type == DType::I2_S) {  // rows of 2-bit codes, one fp32 scale in the tail
    const int64_t n = t.n_elements();
    std::vector<uint8_t> row(size_t(n_in / 4 + kI2STail));
    std::memcpy(row.data() + n_in / 4, t.data + n / 4, size_t(kI2STail));
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(row.data(), t.data + r * (n_in / 4), size_t(n_in / 4));
      dequantize_i2_s(row.data(), n_in, out + (r - r0) * n_in);
    }
    return;
  }
  const int64_t rb = row_bytes(t.type, n_in);
  for (int64_t r = r0; r < r1; ++r) {
    dequantize_row(t.type, t.data + r * rb, n_in, out + (r - r0) * n_in);
  }
}

// Streams W' = out_scale * W + sum of scale * B A, row chunk by row chunk, as `type`.
void write_merged(GgufWriter& w, const OutTensor& o, bool master, const std::string& model_path,
                  ThreadPool& pool) {
  const GgufTensor& t = *o.src;
  const int64_t n_in = t.ne[0], n_out = t.rows();
  std::vector<uint8_t> ternarised;
  if (master) {
    std::vector<float> all(static_cast<size_t>(t.n_elements()));
    dequantize(t.type, t.data, t.n_elements(), all.data());
    ternarised = ternarize_float_weights(DType::TQ2_0, all.data(), t.n_elements());
  }
  const int64_t rows = std::max<int64_t>(1, kChunkValues / n_in);
  std::vector<float> chunk(static_cast<size_t>(std::min(rows, n_out) * n_in));
  std::vector<uint8_t> bytes;
  const size_t esize = o.type == DType::F32 ? 4 : 2;
  std::vector<std::vector<float>> acc(size_t(pool.size()), std::vector<float>(size_t(n_in)));
  for (int64_t c0 = 0; c0 < n_out; c0 += rows) {
    const int64_t c1 = std::min(n_out, c0 + rows);
    pool.parallel_for(c1 - c0, [&](int64_t i0, int64_t i1, int thread) {
      effective_rows(t, ternarised, c0 + i0, c0 + i1, chunk.data() + i0 * n_in);
      std::vector<float>& d = acc[size_t(thread)];
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = c0 + i;
        float* wr = chunk.data() + i * n_in;
        if (o.out_scale != 1.0f) {
          for (int64_t j = 0; j < n_in; ++j) wr[j] *= o.out_scale;
        }
        // the adapter's row for file row r
        const int64_t br = o.permuted_head_dim ? hf_row_of(r, o.permuted_head_dim) : r;
        for (const LoraTerm& term : *o.terms) {
          const LoraLayer& L = *term.layer;
          std::fill(d.begin(), d.end(), 0.0f);
          for (int64_t k = 0; k < L.rank; ++k) {  // row br of B A
            const float bk = L.b[size_t(br * L.rank + k)];
            const float* ak = L.a.data() + k * n_in;
            for (int64_t j = 0; j < n_in; ++j) d[size_t(j)] += bk * ak[j];
          }
          for (int64_t j = 0; j < n_in; ++j) wr[j] += term.scale * d[size_t(j)];
        }
      }
    });
    const int64_t m = (c1 - c0) * n_in;
    bytes.resize(size_t(m) * esize);
    for (int64_t i = 0; i < m; ++i) {
      const float v = chunk[size_t(i)];
      const int64_t r = c0 + i / n_in, col = i % n_in;
      if (!std::isfinite(v)) {
        fail(model_path, ": tensor ", o.name, ": merged weight [", r, ", ", col, "] is ", v);
      }
      if (o.type == DType::F32) {
        std::memcpy(bytes.data() + i * 4, &v, 4);
      } else {
        const uint16_t h = f32_to_fp16(v);
        if ((h & 0x7c00) == 0x7c00) {
          fail(model_path, ": tensor ", o.name, ": merged weight [", r, ", ", col, "] = ", v,
               " is beyond the f16 range; merge with --type f32");
        }
        std::memcpy(bytes.data() + i * 2, &h, 2);
      }
    }
    w.append(bytes.data(), bytes.size());
  }
}

}  // namespace

AdapterSpec parse_adapter_spec(const std::string& spec) {
  AdapterSpec s{spec, 1.0f};
  if (const size_t colon = spec.rfind(':'); colon != std::string::npos) {
    const std::string tail = spec.substr(colon + 1);
    char* end = nullptr;
    const float v = std::strtof(tail.c_str(), &end);
    if (!tail.empty() && end && *end == '\0') {
      s.path = spec.substr(0, colon);
      s.scale = v;
    }
  }
  return s;
}

MergeResult merge_model(const std::string& model_path, const std::vector<MergeSource>& sources,
                        const std::string& out_path, const MergeOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.mode == MergeMode::Float && opt.type != DType::F16 && opt.type != DType::F32) {
    fail("merge: merged layers can be f16 or f32, not ", dtype_name(opt.type));
  }
  if (same_file(model_path, out_path)) {
    fail(out_path, ": the output must be a different file from the model");
  }
  std::unique_ptr<GgufFile> in = GgufFile::open(model_path);
  const HParams hp = HParams::from_gguf(*in);
  bool master = false;  // float linear weights are master weights (no trit.linear_weights)
  if (in->has(kLinearWeightsKey)) {
    const std::string& v = in->get_string(kLinearWeightsKey);
    if (v != kLinearWeightsMerged) {
      fail(model_path, ": metadata key '", kLinearWeightsKey, "' is '", v, "', expected '",
           kLinearWeightsMerged, "'");
    }
  } else {
    master = true;
  }

  std::optional<EmbeddedAdapter> embedded = read_embedded_adapter(*in, hp);
  std::vector<MergeSource> all;
  if (embedded) all.push_back({model_path + " (embedded)", &embedded->adapter, embedded->scale});
  for (const MergeSource& s : sources) {
    if (!s.adapter) fail("merge: adapter ", s.name, " is null");
    if (!std::isfinite(s.scale)) fail(s.name, ": scale ", s.scale, " is not finite");
    check_adapter_against(*s.adapter, hp, s.name);
    all.push_back(s);
  }
  if (all.empty()) fail("merge: no adapters to merge (give --lora A.gguf)");
  std::vector<std::pair<const LoraAdapter*, float>> pairs;
  for (const MergeSource& s : all) pairs.emplace_back(s.adapter, s.scale);
  const LoraTerms set = resolve_lora(pairs, hp);

  GgufWriter w;
  for (const auto& [key, value] : in->metadata()) {
    if (!is_adapter_key(key)) w.set(key, value);  // keeps the order
  }
  w.set_alignment(uint32_t(in->alignment()));
  std::vector<std::string> names;
  if (const GgufValue* v = in->find(kKeyMergedAdapters)) {
    if (v->type != GgufType::ARRAY || v->arr.item_type != GgufType::STRING) {
      fail(model_path, ": metadata key '", kKeyMergedAdapters, "' is not an array of strings");
    }
    names = v->arr.strings;
  }
  for (const MergeSource& s : sources) names.push_back(source_label(s));
  w.set(std::string(kKeyMergedAdapters), GgufValue::string_array(names));

  MergeResult r;
  r.n_adapters = int64_t(all.size());
  std::vector<OutTensor> plan;
  LoraAdapter folded;  // attach mode with several adapters
  const std::vector<std::string>& linear_names = block_linear_names();

  if (opt.mode == MergeMode::Float) {
    std::set<std::string> dropped_scales;  // `.scale` of merged layers, folded into W'
    for (int64_t l = 0; l < hp.n_layer; ++l) {
      for (size_t k = 0; k < linear_names.size(); ++k) {
        if (!set.blocks[size_t(l)][k].empty()) {
          dropped_scales.insert(cat("blk.", l, ".", linear_names[k], ".scale"));
        }
      }
    }
    int64_t n_float_linears = 0;
    for (const GgufTensor& t : in->tensors()) {
      if (is_lora_tensor(t.name) || dropped_scales.count(t.name)) continue;
      OutTensor o{t.name, t.type, t.ne, Produce::Copy, &t};
      const std::optional<LoraTarget> target = parse_lora_layer_name(t.name);
      const bool block_linear = target && target->layer >= 0 && target->layer < hp.n_layer &&
                                std::count(linear_names.begin(), linear_names.end(), target->what);
      if (block_linear && master && is_float_type(t.type) && t.ne[0] % kQK_K != 0) {
        // Its ternary form has no packed type (the loader pads it in memory), and a float
        // layer of a merged file is used as floats: no file can hold this layer unmerged.
        fail(model_path, ": tensor ", t.name, ": ", t.ne[0], " inputs is not a multiple of ", kQK_K,
             ", which a float merge needs for the layers it keeps ternary; use --mode "
             "attach");
      }
      if (block_linear) {
        const size_t k = size_t(std::find(linear_names.begin(), linear_names.end(), target->what) -
                                linear_names.begin());
        const std::vector<LoraTerm>& terms = set.blocks[size_t(target->layer)][k];
        if (!terms.empty()) {
          o.how = Produce::Merge;
          o.type = opt.type;
          o.terms = &terms;
          if (rows_permuted_in_file(hp, target->what)) o.permuted_head_dim = hp.head_dim();
          const std::string scale_name = cat("blk.", target->layer, ".", target->what, ".scale");
          if (const GgufTensor* s = in->find_tensor(scale_name)) {
            if (s->n_elements() != 1) {
              fail(model_path, ": tensor ", scale_name, ": ", s->n_elements(),
                   " elements, expected 1");
            }
            dequantize(s->type, s->data, 1, &o.out_scale);
          }
        } else if (master && is_float_type(t.type)) {
          o.how = Produce::Ternarise;
          o.type = DType::TQ2_0;
        }
        if (is_float_type(o.type)) ++n_float_linears;
      } else if (t.name == "output.weight" && !set.head.empty()) {
        o.how = Produce::Merge;
        o.type = opt.type;
        o.terms = &set.head;
      }
      const bool tied_head_merge =
          t.name == "token_embd.weight" && hp.tied_head && !set.head.empty();
      plan.push_back(std::move(o));
      if (tied_head_merge) {  // the head becomes its own tensor: token_embd + s B A
        OutTensor h{"output.weight", opt.type, t.ne, Produce::Merge, &t, &set.head};
        plan.push_back(std::move(h));
      }
    }
    w.set_string(std::string(kLinearWeightsKey), std::string(kLinearWeightsMerged));
    if (n_float_linears == hp.n_layer * int64_t(linear_names.size())) {
      w.set_u32("general.file_type", opt.type == DType::F16 ? 1 : 0);  // MOSTLY_F16 / ALL_F32
    } else if (master && n_float_linears == 0) {
      w.set_u32("general.file_type", 37);  // LLAMA_FTYPE_MOSTLY_TQ2_0
    }
  } else {
    for (const GgufTensor& t : in->tensors()) {
      if (!is_lora_tensor(t.name)) plan.push_back({t.name, t.type, t.ne, Produce::Copy, &t});
    }
    const LoraAdapter* stored = all.front().adapter;
    float scale = all.front().scale;
    if (all.size() > 1) {
      folded = fold_adapters(all, hp);
      stored = &folded;
      scale = 1.0f;
    }
    for (const std::string& name : lora_layer_order(*stored)) {
      const LoraLayer& L = stored->layers.at(name);
      OutTensor a{
          name + std::string(kLoraSuffixA), DType::F32, {L.n_in, L.rank}, Produce::AdapterA};
      a.lora = &L;
      plan.push_back(std::move(a));
      OutTensor b{
          name + std::string(kLoraSuffixB), DType::F32, {L.rank, L.n_out}, Produce::AdapterB};
      b.lora = &L;
      plan.push_back(std::move(b));
    }
    w.set_f32(std::string(kKeyAlpha), stored->alpha);
    w.set_bool(std::string(kKeyRslora), stored->rslora);
    w.set_f32(std::string(kKeyScale), scale);
  }

  for (const OutTensor& o : plan) w.add_tensor(o.name, o.type, o.ne);
  ThreadPool pool(opt.threads);
  w.begin(out_path);
  for (const OutTensor& o : plan) {
    switch (o.how) {
      case Produce::Copy:
        w.append(o.src->data, size_t(o.src->nbytes));
        ++r.n_copied;
        break;
      case Produce::Merge:
        write_merged(w, o, master && is_float_type(o.src->type) && o.name != "output.weight",
                     model_path, pool);
        ++r.n_merged;
        break;
      case Produce::Ternarise: {
        std::vector<float> v(static_cast<size_t>(o.src->n_elements()));
        dequantize(o.src->type, o.src->data, o.src->n_elements(), v.data());
        const std::vector<uint8_t> bytes =
            ternarize_float_weights(DType::TQ2_0, v.data(), o.src->n_elements());
        w.append(bytes.data(), bytes.size());
        ++r.n_ternarised;
        break;
      }
      case Produce::AdapterA:
        w.append(o.lora->a.data(), o.lora->a.size() * sizeof(float));
        break;
      case Produce::AdapterB:
        w.append(o.lora->b.data(), o.lora->b.size() * sizeof(float));
        ++r.n_adapter_layers;
        break;
    }
  }
  w.finish();

  std::error_code ec;
  r.file_bytes = std::filesystem::file_size(out_path, ec);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

MergeResult merge_adapter_files(const std::string& model_path,
                                const std::vector<std::string>& specs, const std::string& out_path,
                                const MergeOptions& options) {
  std::deque<LoraAdapter> adapters;  // stable addresses
  std::vector<MergeSource> sources;
  const HParams base_hp = HParams::from_gguf(*GgufFile::open(model_path));
  for (const std::string& spec : specs) {
    const AdapterSpec s = parse_adapter_spec(spec);
    adapters.push_back(load_adapter_gguf(s.path));
    sources.push_back({s.path, &adapters.back(), s.scale});
    adapter_rows_from_file(adapters.back(), base_hp, s.path);
  }
  return merge_model(model_path, sources, out_path, options);
}

}  // namespace trit::engine
