#include "io/adapter_gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/shape.h"
#include "core/tensor_names.h"
#include "io/gguf.h"

namespace trit::engine {
namespace {

std::vector<float> tensor_f32(const GgufFile& f, const GgufTensor& t) {
  const int64_t n = t.n_elements();
  std::vector<float> out(static_cast<size_t>(n));
  switch (t.type) {
    case DType::F32:
      std::memcpy(out.data(), t.data, size_t(n) * 4);
      break;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[size_t(i)] = t.type == DType::F16 ? fp16_to_f32(h) : bf16_to_f32(h);
      }
      break;
    default:
      fail(f.path(), ": tensor ", t.name, ": type ", dtype_name(t.type),
           " is not a LoRA type (expected f32, f16 or bf16)");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[size_t(i)])) {
      fail(f.path(), ": tensor ", t.name, ": element ", i, " is ", out[size_t(i)]);
    }
  }
  return out;
}

// Values as stored in `type`, little-endian.
std::vector<uint8_t> encode(const std::vector<float>& v, DType type) {
  std::vector<uint8_t> out;
  if (type == DType::F32) {
    out.resize(v.size() * 4);
    if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
    return out;
  }
  out.resize(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = type == DType::F16 ? f32_to_fp16(v[i]) : f32_to_bf16(v[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

}  // namespace

void save_adapter_gguf(const LoraAdapter& adapter, const std::string& path, DType type) {
  if (type != DType::F32 && type != DType::F16 && type != DType::BF16) {
    fail(path, ": adapter tensors can be f32, f16 or bf16, not ", dtype_name(type));
  }
  lora_validate(adapter, path);
  const std::vector<std::string> order = lora_layer_order(adapter);
  int64_t rank = 0;
  for (const std::string& name : order) {
    const LoraLayer& l = adapter.layers.at(name);
    for (const std::vector<float>* v : {&l.a, &l.b}) {
      for (size_t i = 0; i < v->size(); ++i) {
        if (!std::isfinite((*v)[i])) {
          fail(path, ": layer ", name, ": ", v == &l.a ? "A" : "B", " element ", i, " is ",
               (*v)[i]);
        }
        if (type == DType::F16 && std::fabs((*v)[i]) > 65504.0f) {
          fail(path, ": layer ", name, ": ", v == &l.a ? "A" : "B", " element ", i, " is ", (*v)[i],
               ", beyond the f16 range; write the adapter as f32");
        }
      }
    }
    if (adapter.rslora && rank != 0 && l.rank != rank) {
      fail(path, ": layer ", name, ": rank ", l.rank, " differs from rank ", rank,
           " of the other layers; an rsLoRA adapter needs one rank for llama.cpp's alpha / r "
           "to express alpha / sqrt(r)");
    }
    rank = l.rank;
  }

  // llama.cpp computes alpha / r: store alpha * sqrt(r) for rsLoRA so that it gives alpha /
  // sqrt(r).
  const float file_alpha = adapter.rslora ? adapter.alpha * std::sqrt(float(rank)) : adapter.alpha;
  GgufWriter w;
  w.set_string("general.architecture", adapter.base_arch);
  w.set_string("general.type", "adapter");
  w.set_string("adapter.type", "lora");
  w.set_f32("adapter.lora.alpha", file_alpha);
  w.set_f32("trit.lora.alpha", adapter.alpha);
  w.set_bool("trit.lora.rslora", adapter.rslora);
  w.set_f32("trit.lora.dropout", adapter.dropout);

  std::vector<std::vector<uint8_t>> data;  // kept alive until write()
  data.reserve(order.size() * 2);
  for (const std::string& name : order) {
    const LoraLayer& l = adapter.layers.at(name);
    data.push_back(encode(l.a, type));
    w.add_tensor(name + std::string(kLoraSuffixA), type, {l.n_in, l.rank}, data.back().data());
    data.push_back(encode(l.b, type));
    w.add_tensor(name + std::string(kLoraSuffixB), type, {l.rank, l.n_out}, data.back().data());
  }
  w.write(path);
}

LoraAdapter load_adapter_gguf(const std::string& path) {
  const auto f = GgufFile::open(path);
  return adapter_from_gguf(*f);
}

std::map<std::string, LoraLayer> read_lora_tensors(const GgufFile& f, bool skip_others) {
  const std::string& path = f.path();
  std::map<std::string, LoraLayer> layers;
  struct Pair {
    const GgufTensor* a = nullptr;
    const GgufTensor* b = nullptr;
  };
  std::map<std::string, Pair> pairs;
  for (const GgufTensor& t : f.tensors()) {
    const std::string_view name = t.name;
    const bool is_a = name.ends_with(kLoraSuffixA), is_b = name.ends_with(kLoraSuffixB);
    if (!is_a && !is_b) {
      if (skip_others) continue;
      fail(path, ": tensor ", t.name, ": not a LoRA tensor (names end in .lora_a or .lora_b)");
    }
    const std::string base(name.substr(0, name.size() - kLoraSuffixA.size()));
    if (!parse_lora_layer_name(base)) {
      fail(path, ": tensor ", t.name, ": ", base,
           " is not a linear layer LoRA can adapt (expected blk.N.{attn_q,attn_k,attn_v,"
           "attn_output,ffn_gate,ffn_up,ffn_down}.weight or output.weight)");
    }
    (is_a ? pairs[base].a : pairs[base].b) = &t;
  }
  for (const auto& [base, p] : pairs) {
    if (p.a == nullptr || p.b == nullptr) {
      fail(path, ": tensor ", base, p.a ? kLoraSuffixB : kLoraSuffixA, ": missing (", base,
           p.a ? kLoraSuffixA : kLoraSuffixB, " has no partner)");
    }
    int64_t a0, a1, b0, b1;
    if (!p.a->matrix_dims(&a0, &a1)) {
      fail(path, ": tensor ", p.a->name, ": ne ", shape_text(p.a->ne), " is not a matrix");
    }
    if (!p.b->matrix_dims(&b0, &b1)) {
      fail(path, ": tensor ", p.b->name, ": ne ", shape_text(p.b->ne), " is not a matrix");
    }
    if (a1 != b0) {
      fail(path, ": tensor ", p.a->name, ": ne ", shape_text(p.a->ne), " and ", p.b->name, " ne ",
           shape_text(p.b->ne),
           " disagree on the rank (lora_a ne[1] must equal lora_b ne[0]; "
           "lora_a is [n_in, r], lora_b is [r, n_out])");
    }
    LoraLayer l;
    l.n_in = a0;
    l.rank = a1;
    l.n_out = b1;
    l.a = tensor_f32(f, *p.a);  // (rank, n_in) row-major: the ggml bytes as they are
    l.b = tensor_f32(f, *p.b);  // (n_out, rank) row-major
    layers.emplace(base, std::move(l));
  }

  return layers;
}

LoraAdapter adapter_from_gguf(const GgufFile& f) {
  const std::string& path = f.path();
  if (!f.has("general.type")) {
    fail(path,
         ": metadata key 'general.type' is missing, expected 'adapter' (a model rather "
         "than a LoRA adapter?)");
  }
  const std::string& general_type = f.get_string("general.type");
  if (general_type != "adapter") {
    fail(path, ": metadata key 'general.type' is '", general_type,
         "', expected 'adapter' (a model rather than a LoRA adapter?)");
  }
  const std::string& adapter_type = f.get_string("adapter.type");
  if (adapter_type != "lora") {
    fail(path, ": metadata key 'adapter.type' is '", adapter_type, "', expected 'lora'");
  }
  LoraAdapter out;
  out.base_arch = f.get_string("general.architecture");
  if (out.base_arch.empty()) fail(path, ": metadata key 'general.architecture' is empty");
  // As llama.cpp: a missing alpha reads as 0, which means "scale 1" rather than alpha / r.
  const float file_alpha = f.get_f32_or("adapter.lora.alpha", 0.0f);
  if (!std::isfinite(file_alpha)) {
    fail(path, ": metadata key 'adapter.lora.alpha' is ", file_alpha, ", not finite");
  }
  out.rslora = f.get_bool_or("trit.lora.rslora", false);
  out.dropout = f.get_f32_or("trit.lora.dropout", 0.0f);
  if (!(out.dropout >= 0.0f && out.dropout < 1.0f)) {
    fail(path, ": metadata key 'trit.lora.dropout' is ", out.dropout, ", expected 0 <= p < 1");
  }
  const GgufValue* trit_alpha = f.find("trit.lora.alpha");
  if (out.rslora && trit_alpha == nullptr) {
    fail(path, ": metadata key 'trit.lora.alpha': missing (needed with trit.lora.rslora = true)");
  }
  const float orig_alpha = f.get_f32_or("trit.lora.alpha", file_alpha);
  if (!std::isfinite(orig_alpha)) {
    fail(path, ": metadata key 'trit.lora.alpha' is ", orig_alpha, ", not finite");
  }

  out.layers = read_lora_tensors(f, false);
  if (out.layers.empty()) fail(path, ": the adapter has no tensors");
  std::set<int64_t> ranks;
  for (const auto& [name, l] : out.layers) ranks.insert(l.rank);

  const int64_t rank = *ranks.begin();
  if (out.rslora) {
    if (ranks.size() != 1) {
      fail(path, ": trit.lora.rslora is set but the layers have ", ranks.size(),
           " different ranks (", *ranks.begin(), " .. ", *ranks.rbegin(), ")");
    }
    const float expect = orig_alpha * std::sqrt(float(rank));
    if (std::fabs(expect - file_alpha) > 1e-5f * std::max(1.0f, std::fabs(expect))) {
      fail(path, ": metadata key 'adapter.lora.alpha' is ", file_alpha,
           ", but rsLoRA with trit.lora.alpha ", orig_alpha, " and rank ", rank, " needs ", expect);
    }
    out.alpha = orig_alpha;
  } else if (file_alpha == 0.0f) {
    // llama.cpp's scale without alpha is 1, which is alpha / r with alpha = r.
    if (ranks.size() != 1) {
      fail(path,
           ": metadata key 'adapter.lora.alpha' is missing or 0 (scale 1) and the layers "
           "have different ranks; trit cannot express that");
    }
    out.alpha = float(rank);
  } else {
    if (trit_alpha != nullptr && orig_alpha != file_alpha) {
      fail(path, ": metadata key 'trit.lora.alpha' is ", orig_alpha, " but adapter.lora.alpha is ",
           file_alpha, " (they must agree without rsLoRA)");
    }
    out.alpha = file_alpha;
  }
  lora_validate(out, path);
  return out;
}

}  // namespace trit::engine
