#include "tools/info.h"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/shape.h"
#include "io/gguf.h"

namespace trit::engine {
namespace {

std::string render_scalar(const GgufValue& v) {
  switch (v.type) {
    case GgufType::BOOL:
      return v.i ? "true" : "false";
    case GgufType::U64:
      return std::to_string(uint64_t(v.i));
    case GgufType::F32:
    case GgufType::F64: {
      std::ostringstream s;
      s.precision(v.type == GgufType::F32 ? 7 : 15);
      s << v.f;
      return s.str();
    }
    case GgufType::STRING: {
      std::string out = "\"";
      for (size_t i = 0; i < v.s.size() && i < 60; ++i) {
        const char c = v.s[i];
        if (c == '\n') {
          out += "\\n";
        } else if (c == '"') {
          out += "\\\"";
        } else {
          out += c;
        }
      }
      out += v.s.size() > 60 ? cat("...\" (", v.s.size(), " bytes)") : "\"";
      return out;
    }
    case GgufType::ARRAY:
      return cat("[", gguf_type_name(v.arr.item_type), " x ", v.arr.size(), "]");
    default:
      return std::to_string(v.i);
  }
}

// The shortest decimal that reads back as the float, as a double (1e-05, not 9.99999975e-06).
double clean_double(float f) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, f);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

// The weights a fine-tune on the CPU holds at once: where that saves enough
// (finetune_weight_bytes) its passes release each block's file pages after the block
// (model/forward.h, stream_weights), so at most two neighbouring blocks (the LM head counts as
// one, after the last) are resident, as Model::min_stream_bytes counts; else every block.
std::pair<uint64_t, bool> finetune_weights(const GgufFile& f, int64_t n_layer) {
  std::vector<uint64_t> spans(size_t(std::max<int64_t>(n_layer, 0)) + 1, 0);
  uint64_t embd = 0, output = 0;
  for (const GgufTensor& t : f.tensors()) {
    int64_t l = -1;
    if (t.name.rfind("blk.", 0) == 0) {
      const char* p = t.name.c_str() + 4;
      if (std::from_chars(p, p + std::strlen(p), l).ec != std::errc()) l = -1;
    }
    if (l >= 0 && l < n_layer) {
      spans[size_t(l)] += t.nbytes;
    } else if (t.name == "output.weight") {
      output = t.nbytes;
    } else if (t.name == "token_embd.weight") {
      embd = t.nbytes;
    }
  }
  spans.back() = output > 0 ? output : embd;  // a tied head reads the embedding table
  uint64_t pair = 0, all = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    pair = std::max(pair, spans[i] + spans[(i + 1) % spans.size()]);
    all += spans[i];
  }
  const uint64_t held = finetune_weight_bytes(all, pair);
  return {held, held != all};
}

std::string file_type_name(uint32_t ft) {
  switch (ft) {
    case 0:
      return "all f32";
    case 1:
      return "mostly f16";
    case 7:
      return "mostly q8_0";
    case 18:
      return "mostly q6_K";
    case 32:
      return "mostly bf16";
    case 36:
      return "mostly tq1_0";
    case 37:
      return "mostly tq2_0";
    case 40:
      return "mostly i2_s";
    default:
      return "other";
  }
}

std::string count_string(int64_t n) {
  char buf[32];
  if (n >= 1000000000) {
    std::snprintf(buf, sizeof buf, "%.2f B", double(n) / 1e9);
  } else if (n >= 1000000) {
    std::snprintf(buf, sizeof buf, "%.2f M", double(n) / 1e6);
  } else if (n >= 1000) {
    std::snprintf(buf, sizeof buf, "%.2f K", double(n) / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRId64, n);
  }
  return buf;
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  }
  return buf;
}

ModelInfo read_model_info(const GgufFile& f, const MemoryQuery& memory) {
  ModelInfo info;
  info.path = f.path();
  info.file_size = f.file_size();
  info.version = f.version();
  info.alignment = f.alignment();
  info.arch = f.get_string_or("general.architecture", "");
  info.name = f.get_string_or("general.name", "");
  if (const GgufValue* ft = f.find("general.file_type");
      ft && ft->type != GgufType::STRING && ft->type != GgufType::ARRAY) {
    info.file_type = uint32_t(ft->i);
  }
  for (const auto& [key, value] : f.metadata())
    info.metadata.emplace_back(key, render_scalar(value));

  // A llama file is one of trit's when its linear layers are ternary (float ones are checked
  // at load: model/model.h).
  const GgufTensor* q0 = f.find_tensor("blk.0.attn_q.weight");
  const bool ternary_llama = info.arch == "llama" && q0 && dtype_traits(q0->type).ternary;
  if (info.arch == "bitnet" || info.arch == "bitnet-b1.58" || ternary_llama) {
    try {
      info.hparams = HParams::from_gguf(f, std::nullopt, &info.act_source);
      info.family = info.hparams->sub_norms()
                        ? cat(family_name(info.hparams->family()),
                              " (sub-norms before the attention output and down projections)")
                        : cat(family_name(info.hparams->family()),
                              " (llama blocks without sub-norms, ternary linear layers)");
    } catch (const Error& e) {
      info.hparams_error = e.what();
    }
  }

  // Tokenizer: read leniently; a malformed one is reported by the commands that use it.
  if (const GgufValue* m = f.find("tokenizer.ggml.model"); m && m->type == GgufType::STRING) {
    info.tokenizer_model = m->s;
    if (const GgufValue* p = f.find("tokenizer.ggml.pre"); p && p->type == GgufType::STRING) {
      info.tokenizer_pre = p->s;
    }
    if (const GgufValue* t = f.find("tokenizer.ggml.tokens"); t && t->type == GgufType::ARRAY) {
      info.tokenizer_vocab = int64_t(t->arr.size());
    }
    auto id = [&](const char* key) -> int64_t {
      const GgufValue* v = f.find(key);
      if (!v || v->type == GgufType::STRING || v->type == GgufType::ARRAY) return -1;
      return v->i;
    };
    info.bos = id("tokenizer.ggml.bos_token_id");
    info.eos = id("tokenizer.ggml.eos_token_id");
  }
  info.chat_template = f.has("tokenizer.chat_template");

  for (const GgufTensor& t : f.tensors()) {
    info.tensors.push_back({t.name, t.type, t.ne, t.nbytes});
    info.n_params += t.n_elements();
    info.tensor_bytes += t.nbytes;
    TypeTotals* tt = nullptr;
    for (TypeTotals& x : info.type_totals) {
      if (x.type == t.type) tt = &x;
    }
    if (!tt) {
      info.type_totals.push_back({t.type, 0, 0, 0});
      tt = &info.type_totals.back();
    }
    ++tt->n_tensors;
    tt->n_elements += t.n_elements();
    tt->nbytes += t.nbytes;
  }

  info.memory = memory;
  if (info.hparams) {
    const HParams& hp = *info.hparams;
    MemoryQuery& q = info.memory;
    if (q.run_ctx <= 0) q.run_ctx = std::min<int64_t>(hp.n_ctx_train, 4096);
    // Weights as the engine holds them: mapped from the file and read in place (the tensors a
    // load copies, norms and a llama file's q and k rows, leave their file pages).
    info.run = run_memory(hp, info.tensor_bytes, q.run_ctx, q.run_batch, q.kv);
    const auto [weights, streams] = finetune_weights(f, hp.n_layer);
    info.finetune_streams = streams;
    const int threads =
        q.threads > 0 ? q.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    info.finetune =
        finetune_memory(hp, weights, q.train_ctx, q.rank, q.targets, q.checkpointing, 0, threads);
  }
  return info;
}

std::string format_model_info(const ModelInfo& info, bool all_tensors) {
  std::ostringstream o;
  o << "file:          " << info.path << " (" << format_bytes(info.file_size) << ", GGUF v"
    << info.version << ", alignment " << info.alignment << ")\n";
  o << "architecture:  " << (info.arch.empty() ? "(none)" : info.arch) << "\n";
  if (!info.name.empty()) o << "name:          " << info.name << "\n";
  if (info.file_type) {
    o << "file type:     " << *info.file_type << " (" << file_type_name(*info.file_type) << ")\n";
  }
  if (info.hparams) {
    const HParams& hp = *info.hparams;
    o << "family:        " << info.family << "\n";
    o << "model:         " << hp.n_layer << " layers, embd " << hp.n_embd << ", ff " << hp.n_ff
      << ", heads " << hp.n_head << " (kv " << hp.n_head_kv << ", head dim " << hp.head_dim()
      << "), vocab " << hp.n_vocab << "\n";
    o << "               context " << hp.n_ctx_train << ", rope theta " << hp.rope_theta << " (dim "
      << hp.rope_dim << "), rms eps " << hp.rms_eps << ", " << (hp.tied_head ? "tied" : "separate")
      << " output head\n";
    o << "activation:    " << activation_name(hp.act) << " (" << info.act_source.why << ")\n";
  } else if (!info.hparams_error.empty()) {
    o << "model:         hyperparameters unreadable: " << info.hparams_error << "\n";
  }
  if (!info.tokenizer_model.empty()) {
    o << "tokenizer:     " << info.tokenizer_model;
    if (!info.tokenizer_pre.empty()) o << " (pre " << info.tokenizer_pre << ")";
    o << ", " << info.tokenizer_vocab << " tokens, bos " << info.bos << ", eos " << info.eos
      << "\n";
  } else {
    o << "tokenizer:     none\n";
  }
  o << "chat template: " << (info.chat_template ? "yes" : "no") << "\n";

  o << "metadata (" << info.metadata.size() << " keys):\n";
  for (const auto& [k, v] : info.metadata) o << "  " << k << " = " << v << "\n";

  o << "tensors:       " << info.tensors.size() << ", " << count_string(info.n_params)
    << " parameters, " << format_bytes(info.tensor_bytes) << "\n";
  char line[512];
  if (all_tensors) {
    size_t w = 4;
    for (const TensorSummary& t : info.tensors) w = std::max(w, t.name.size());
    std::snprintf(line, sizeof line, "  %-*s  %-6s  %-16s  %12s\n", int(w), "name", "type", "shape",
                  "bytes");
    o << line;
    for (const TensorSummary& t : info.tensors) {
      std::snprintf(line, sizeof line, "  %-*s  %-6s  %-16s  %12" PRIu64 "\n", int(w),
                    t.name.c_str(), std::string(dtype_name(t.type)).c_str(),
                    shape_text(t.ne).c_str(), t.nbytes);
      o << line;
    }
  } else {
    std::snprintf(line, sizeof line, "  %-6s  %8s  %12s  %12s\n", "type", "tensors", "parameters",
                  "bytes");
    o << line;
    for (const TypeTotals& t : info.type_totals) {
      std::snprintf(line, sizeof line, "  %-6s  %8" PRId64 "  %12s  %12s\n",
                    std::string(dtype_name(t.type)).c_str(), t.n_tensors,
                    count_string(t.n_elements).c_str(), format_bytes(t.nbytes).c_str());
      o << line;
    }
    o << "  (--tensors lists every tensor)\n";
  }
  if (info.hparams) {
    const MemoryQuery& q = info.memory;
    const MemoryEstimate& r = info.run;
    const MemoryEstimate& f = info.finetune;
    o << "memory on the CPU (peak resident set, estimated):\n";
    o << "  to run (ctx " << q.run_ctx << ", " << (q.kv == KvType::F16 ? "f16" : "f32")
      << " KV cache): " << format_bytes(r.total()) << " = weights " << format_bytes(r.weights)
      << " + KV cache " << format_bytes(r.kv_cache) << " + activations "
      << format_bytes(r.activations) << " + tokenizer " << format_bytes(r.tokenizer)
      << " + process " << format_bytes(r.process) << "\n";
    o << "  to fine-tune (ctx " << q.train_ctx << ", LoRA rank " << q.rank << " on " << q.targets
      << ", batch " << q.batch << ", gradient checkpointing " << (q.checkpointing ? "on" : "off")
      << "): " << format_bytes(f.total()) << " = weights " << format_bytes(f.weights)
      << (info.finetune_streams ? " (two blocks at a time)" : " (every block)") << " + adapter "
      << format_bytes(f.adapter) << " (values, gradients, AdamW moments) + activations "
      << format_bytes(f.activations) << " + tokenizer " << format_bytes(f.tokenizer)
      << " + process " << format_bytes(f.process) << "\n";
  }
  return o.str();
}

std::string model_info_json(const ModelInfo& info, bool all_tensors) {
  using nlohmann::json;
  json j;
  j["path"] = info.path;
  j["file_size"] = info.file_size;
  j["gguf_version"] = info.version;
  j["alignment"] = info.alignment;
  j["architecture"] = info.arch;
  j["name"] = info.name;
  j["file_type"] = info.file_type ? json(*info.file_type) : json(nullptr);
  if (info.hparams) {
    const HParams& hp = *info.hparams;
    j["hparams"] = {{"n_vocab", hp.n_vocab},
                    {"n_embd", hp.n_embd},
                    {"n_ff", hp.n_ff},
                    {"n_layer", hp.n_layer},
                    {"n_head", hp.n_head},
                    {"n_head_kv", hp.n_head_kv},
                    {"head_dim", hp.head_dim()},
                    {"n_ctx_train", hp.n_ctx_train},
                    {"rope_dim", hp.rope_dim},
                    {"rope_theta", clean_double(hp.rope_theta)},
                    {"rms_eps", clean_double(hp.rms_eps)},
                    {"act", std::string(activation_name(hp.act))},
                    {"act_defaulted", info.act_source.assumed},
                    {"act_why", info.act_source.why},
                    {"family", info.family},
                    {"tied_head", hp.tied_head}};
  } else {
    j["hparams"] = nullptr;
    if (!info.hparams_error.empty()) j["hparams_error"] = info.hparams_error;
  }
  if (!info.tokenizer_model.empty()) {
    j["tokenizer"] = {{"model", info.tokenizer_model},
                      {"pre", info.tokenizer_pre},
                      {"vocab_size", info.tokenizer_vocab},
                      {"bos", info.bos},
                      {"eos", info.eos}};
  } else {
    j["tokenizer"] = nullptr;
  }
  j["chat_template"] = info.chat_template;
  json meta = json::object();
  for (const auto& [k, v] : info.metadata) meta[k] = v;
  j["metadata"] = meta;
  j["n_tensors"] = info.tensors.size();
  j["n_params"] = info.n_params;
  j["tensor_bytes"] = info.tensor_bytes;
  json types = json::array();
  for (const TypeTotals& t : info.type_totals) {
    types.push_back({{"type", std::string(dtype_name(t.type))},
                     {"tensors", t.n_tensors},
                     {"elements", t.n_elements},
                     {"bytes", t.nbytes}});
  }
  j["types"] = types;
  if (all_tensors) {
    json ts = json::array();
    for (const TensorSummary& t : info.tensors) {
      ts.push_back({{"name", t.name},
                    {"type", std::string(dtype_name(t.type))},
                    {"shape", t.ne},
                    {"bytes", t.nbytes}});
    }
    j["tensors"] = ts;
  }
  if (info.hparams) {
    auto parts = [](const MemoryEstimate& m) {
      return json{
          {"process", m.process},   {"weights", m.weights},         {"tokenizer", m.tokenizer},
          {"kv_cache", m.kv_cache}, {"activations", m.activations}, {"adapter", m.adapter},
          {"total", m.total()}};
    };
    const MemoryQuery& q = info.memory;
    json run = parts(info.run), ft = parts(info.finetune);
    run["ctx"] = q.run_ctx;
    run["cache_type"] = q.kv == KvType::F16 ? "f16" : "f32";
    ft["ctx"] = q.train_ctx;
    ft["rank"] = q.rank;
    ft["targets"] = q.targets;
    ft["batch"] = q.batch;
    ft["checkpointing"] = q.checkpointing;
    j["memory"] = {{"run", run}, {"finetune", ft}};
  } else {
    j["memory"] = nullptr;
  }
  // Keys or strings from a file may hold invalid UTF-8: replace rather than throw.
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace trit::engine
