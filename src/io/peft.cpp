#include "io/peft.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>  // mkdtemp

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/shape.h"
#include "core/tensor_names.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr std::string_view kKeyPrefix = "base_model.model.";

struct ModuleInfo {
  const char* gguf;    // block_linear_names() entry, or "output"
  const char* peft;    // the module's last name component
  const char* parent;  // "self_attn", "mlp", or "" for the head
};

constexpr ModuleInfo kModules[] = {
    {"attn_q", "q_proj", "self_attn"}, {"attn_k", "k_proj", "self_attn"},
    {"attn_v", "v_proj", "self_attn"}, {"attn_output", "o_proj", "self_attn"},
    {"ffn_gate", "gate_proj", "mlp"},  {"ffn_up", "up_proj", "mlp"},
    {"ffn_down", "down_proj", "mlp"},  {"output", "lm_head", ""},
};

std::string valid_modules() {
  std::string s;
  for (const ModuleInfo& m : kModules) s += (s.empty() ? "" : ", ") + std::string(m.peft);
  return s;
}

std::string last_component(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

struct Pcre2Free {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};

// A whole-string match, as Python's re.fullmatch (PEFT's test for a string target_modules).
bool full_match(const pcre2_code* re, const std::string& s) {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
  if (md == nullptr) fail("target_modules: out of memory");
  const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                             PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

// How target_modules selects modules, as PEFT's check_target_module_exists does.
struct TargetMatcher {
  enum class Kind { Any, List, AllLinear, Regex } kind = Kind::Any;
  std::vector<std::string> list;
  std::string pattern;
  std::unique_ptr<pcre2_code, Pcre2Free> re;

  bool matches(const std::string& module) const {
    switch (kind) {
      case Kind::Any:
        return true;
      case Kind::AllLinear:  // every linear layer except the output layer
        return module != "lm_head";
      case Kind::Regex:
        return full_match(re.get(), module);
      case Kind::List:
        for (const std::string& t : list) {
          if (module == t || (module.size() > t.size() && module.ends_with("." + t))) return true;
        }
        return false;
    }
    return false;
  }
};

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

struct PeftConfig {
  int64_t r = 0;
  float alpha = 8.0f;  // PEFT's default lora_alpha
  bool rslora = false;
  float dropout = 0.0f;
  TargetMatcher targets;
};

PeftConfig parse_config(const std::string& path) {
  const json j = read_json(path);
  if (!j.is_object()) fail(path, ": not a JSON object");
  auto field = [&](const char* key) -> const json* {
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  };
  auto bad = [&](const char* key, const std::string& why) {
    fail(path, ": field '", key, "': ", why);
  };
  PeftConfig c;
  if (const json* v = field("peft_type"); v && !v->is_null()) {
    if (!v->is_string() || v->get<std::string>() != "LORA") {
      bad("peft_type", cat("is ", v->dump(), ", only \"LORA\" adapters are read"));
    }
  }
  const json* r = field("r");
  if (r == nullptr) bad("r", "missing");
  if (!r->is_number_integer() || r->get<int64_t>() <= 0 || r->get<int64_t>() > (1 << 24)) {
    bad("r", cat("is ", r->dump(), ", expected a positive integer"));
  }
  c.r = r->get<int64_t>();
  if (const json* v = field("lora_alpha"); v && !v->is_null()) {
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      bad("lora_alpha", cat("is ", v->dump(), ", expected a number"));
    }
    c.alpha = float(v->get<double>());
  }
  if (const json* v = field("use_rslora"); v && !v->is_null()) {
    if (!v->is_boolean()) bad("use_rslora", cat("is ", v->dump(), ", expected true or false"));
    c.rslora = v->get<bool>();
  }
  if (const json* v = field("lora_dropout"); v && !v->is_null()) {
    if (!v->is_number() || !(v->get<double>() >= 0.0 && v->get<double>() < 1.0)) {
      bad("lora_dropout", cat("is ", v->dump(), ", expected a number in [0, 1)"));
    }
    c.dropout = float(v->get<double>());
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    const json* v = field(key);
    if (v == nullptr || v->is_null() || (v->is_object() && v->empty())) continue;
    bad(key, cat("is ", v->dump(),
                 "; per-module ranks and alphas are not supported (every "
                 "layer must use r and lora_alpha)"));
  }
  if (const json* v = field("bias"); v && !v->is_null()) {
    if (!v->is_string() || v->get<std::string>() != "none") {
      bad("bias", cat("is ", v->dump(), ", only \"none\" is supported (trit trains no biases)"));
    }
  }
  if (const json* v = field("fan_in_fan_out"); v && !v->is_null()) {
    if (!v->is_boolean() || v->get<bool>()) {
      bad("fan_in_fan_out", cat("is ", v->dump(), ", only false is supported"));
    }
  }
  if (const json* v = field("modules_to_save"); v && !v->is_null()) {
    if (!v->is_array() || !v->empty()) {
      bad("modules_to_save",
          cat("is ", v->dump(), "; fully trained extra modules are not supported (expected null)"));
    }
  }
  if (const json* v = field("use_dora"); v && !v->is_null()) {
    if (!v->is_boolean() || v->get<bool>()) {
      bad("use_dora", cat("is ", v->dump(), "; DoRA adapters are not supported"));
    }
  }
  if (const json* v = field("target_modules"); v && !v->is_null()) {
    if (v->is_string()) {
      const std::string s = v->get<std::string>();
      if (s == "all-linear") {
        c.targets.kind = TargetMatcher::Kind::AllLinear;
      } else {
        c.targets.kind = TargetMatcher::Kind::Regex;
        c.targets.pattern = s;
        int err = 0;
        PCRE2_SIZE err_offset = 0;
        c.targets.re.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, &err,
                                         &err_offset, nullptr));
        if (!c.targets.re) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(err, msg, sizeof(msg));
          bad("target_modules", cat("\"", s, "\" is not a regular expression trit can read: ",
                                    reinterpret_cast<const char*>(msg), " at offset ", err_offset));
        }
      }
    } else if (v->is_array()) {
      c.targets.kind = TargetMatcher::Kind::List;
      for (const json& t : *v) {
        if (!t.is_string() || t.get<std::string>().empty()) {
          bad("target_modules", cat("entry ", t.dump(), " is not a module name"));
        }
        const std::string name = t.get<std::string>();
        const std::string last = last_component(name);
        if (std::none_of(std::begin(kModules), std::end(kModules),
                         [&](const ModuleInfo& m) { return last == m.peft; })) {
          bad("target_modules",
              cat("names the module '", name,
                  "', which is not a linear layer trit can adapt (valid: ", valid_modules(), ")"));
        }
        c.targets.list.push_back(name);
      }
      if (c.targets.list.empty()) bad("target_modules", "is an empty list");
    } else {
      bad("target_modules", cat("is ", v->dump(), ", expected a list of names or a string"));
    }
  }
  return c;
}

// "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" -> module and 'A' / 'B'.
bool split_key(const std::string& key, std::string* module, char* which) {
  constexpr std::string_view a = ".lora_A.weight", b = ".lora_B.weight";
  if (!key.starts_with(kKeyPrefix)) return false;
  const bool is_a = key.ends_with(a), is_b = key.ends_with(b);
  if (!is_a && !is_b) return false;
  *module = key.substr(kKeyPrefix.size(), key.size() - kKeyPrefix.size() - a.size());
  *which = is_a ? 'A' : 'B';
  return !module->empty();
}

void check_float(const StTensor& t, const std::string& file) {
  if (t.dtype != StDType::F32 && t.dtype != StDType::F16 && t.dtype != StDType::BF16) {
    fail(file, ": tensor ", t.name, ": dtype ", st_dtype_name(t.dtype),
         " is not a LoRA type (expected F32, F16 or BF16)");
  }
}

std::vector<float> finite_values(const StTensor& t, const std::string& file) {
  std::vector<float> v = t.to_f32(file);
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) fail(file, ": tensor ", t.name, ": element ", i, " is ", v[i]);
  }
  return v;
}

// Removes a folder tree on scope exit unless released.
class TreeGuard {
 public:
  explicit TreeGuard(std::string path) : path_(std::move(path)) {}
  ~TreeGuard() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  void release() { path_.clear(); }
  TreeGuard(const TreeGuard&) = delete;
  TreeGuard& operator=(const TreeGuard&) = delete;

 private:
  std::string path_;
};

std::string make_temp_dir(const std::string& base, const std::string& tag,
                          const std::string& for_path) {
  std::string tmpl = base + tag + "XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    fail(for_path, ": cannot create a temporary folder ", tmpl, ": ", std::strerror(errno));
  }
  return tmpl;
}

// The shortest decimal that reads back as x (0.05f is written 0.05, not 0.0500000007).
double json_number(float x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

}  // namespace

std::optional<std::string> peft_module_of(const std::string& gguf_name) {
  const auto t = parse_lora_layer_name(gguf_name);
  if (!t) return std::nullopt;
  for (const ModuleInfo& m : kModules) {
    if (t->what != m.gguf) continue;
    if (t->layer < 0) return std::string(m.peft);
    return cat("model.layers.", t->layer, ".", m.parent, ".", m.peft);
  }
  return std::nullopt;
}

std::optional<std::string> gguf_name_of_peft_module(const std::string& module) {
  if (module == "lm_head") return std::string("output.weight");
  constexpr std::string_view prefix = "model.layers.";
  if (!module.starts_with(prefix)) return std::nullopt;
  const std::string rest = module.substr(prefix.size());  // "3.self_attn.q_proj"
  const size_t dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot > 9) return std::nullopt;
  const std::string index = rest.substr(0, dot);
  if (!std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      (index.size() > 1 && index[0] == '0')) {
    return std::nullopt;
  }
  const std::string tail = rest.substr(dot + 1);
  for (const ModuleInfo& m : kModules) {
    if (*m.parent != '\0' && tail == cat(m.parent, ".", m.peft)) {
      return block_tensor_name(std::stoll(index), m.gguf);
    }
  }
  return std::nullopt;
}

LoraAdapter load_peft(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) fail(dir, ": not a folder");
  const std::string config_path = (root / kConfigFile).string();
  if (!fs::exists(config_path, ec)) fail(dir, ": no ", kConfigFile, " (not a PEFT adapter)");
  const PeftConfig c = parse_config(config_path);

  const std::string weights_path = (root / kWeightsFile).string();
  if (!fs::exists(weights_path, ec)) {
    if (fs::exists(root / "adapter_model.bin", ec)) {
      fail(dir,
           ": adapter_model.bin is a pickle file, which trit does not read; save the "
           "adapter with safe_serialization=True to get ",
           kWeightsFile);
    }
    fail(dir, ": missing ", kWeightsFile);
  }
  const auto st = SafetensorsFile::open(weights_path);

  struct Pair {
    const StTensor* a = nullptr;
    const StTensor* b = nullptr;
  };
  std::map<std::string, Pair> modules;  // PEFT module name -> tensors
  for (const auto& [key, t] : st->tensors()) {
    std::string module;
    char which = 0;
    if (!split_key(key, &module, &which)) {
      fail(weights_path, ": tensor ", key,
           ": not a LoRA weight (expected base_model.model."
           "<module>.lora_A.weight or .lora_B.weight)");
    }
    if (!gguf_name_of_peft_module(module)) {
      fail(weights_path, ": tensor ", key, ": module ", module,
           " is not a linear layer trit can adapt (model.layers.N.self_attn.{q,k,v,o}_proj, "
           "model.layers.N.mlp.{gate,up,down}_proj or lm_head)");
    }
    if (!c.targets.matches(module)) {
      fail(weights_path, ": tensor ", key, ": module ", module, " is not selected by ", kConfigFile,
           "'s target_modules");
    }
    (which == 'A' ? modules[module].a : modules[module].b) = &t;
  }
  if (modules.empty()) fail(weights_path, ": no LoRA tensors");
  if (c.targets.kind == TargetMatcher::Kind::List) {
    for (const std::string& t : c.targets.list) {
      if (std::none_of(modules.begin(), modules.end(), [&](const auto& kv) {
            return kv.first == t || kv.first.ends_with("." + t);
          })) {
        fail(config_path, ": field 'target_modules': '", t, "' matches no tensor of ",
             kWeightsFile);
      }
    }
  }

  LoraAdapter out;
  out.alpha = c.alpha;
  out.rslora = c.rslora;
  out.dropout = c.dropout;
  out.base_arch = "bitnet";
  for (const auto& [module, p] : modules) {
    const std::string prefix = std::string(kKeyPrefix) + module;
    if (p.a == nullptr || p.b == nullptr) {
      fail(weights_path, ": tensor ", prefix, p.a ? ".lora_B.weight" : ".lora_A.weight",
           ": missing (", prefix, p.a ? ".lora_A.weight" : ".lora_B.weight", " has no partner)");
    }
    check_float(*p.a, weights_path);
    check_float(*p.b, weights_path);
    if (p.a->shape.size() != 2) {
      fail(weights_path, ": tensor ", p.a->name, ": shape ", shape_text(p.a->shape, '(', ')'),
           " is not (r, in)");
    }
    if (p.b->shape.size() != 2) {
      fail(weights_path, ": tensor ", p.b->name, ": shape ", shape_text(p.b->shape, '(', ')'),
           " is not (out, r)");
    }
    if (p.a->shape[0] != c.r) {
      fail(weights_path, ": tensor ", p.a->name, ": shape ", shape_text(p.a->shape, '(', ')'),
           " has rank ", p.a->shape[0], ", but ", kConfigFile, " says r = ", c.r);
    }
    if (p.b->shape[1] != c.r) {
      fail(weights_path, ": tensor ", p.b->name, ": shape ", shape_text(p.b->shape, '(', ')'),
           " has rank ", p.b->shape[1], ", but ", kConfigFile, " says r = ", c.r);
    }
    LoraLayer l;
    l.rank = c.r;
    l.n_in = p.a->shape[1];
    l.n_out = p.b->shape[0];
    if (l.n_in <= 0 || l.n_out <= 0) {
      fail(weights_path, ": tensor ", prefix, ": empty shape (in ", l.n_in, ", out ", l.n_out, ")");
    }
    l.a = finite_values(*p.a, weights_path);  // (r, in) row-major: LoraLayer::a as it is
    l.b = finite_values(*p.b, weights_path);  // (out, r) row-major
    out.layers.emplace(*gguf_name_of_peft_module(module), std::move(l));
  }
  lora_validate(out, dir);
  return out;
}

void save_peft(const LoraAdapter& adapter, const std::string& dir) {
  lora_validate(adapter, dir);
  const std::vector<std::string> order = lora_layer_order(adapter);
  const int64_t rank = adapter.layers.at(order.front()).rank;
  for (const std::string& name : order) {
    if (adapter.layers.at(name).rank != rank) {
      fail(dir, ": layer ", name, ": rank ", adapter.layers.at(name).rank, " differs from rank ",
           rank, " of ", order.front(), "; a PEFT adapter with one r needs one rank");
    }
  }

  // target_modules: the short names when blocks 0..N-1 all carry the same set, else every
  // module by its full name (PEFT matches either by "."-suffix).
  std::map<int64_t, std::set<std::string>> per_block;
  bool head = false;
  for (const std::string& name : order) {
    const auto t = parse_lora_layer_name(name);
    if (t->layer < 0) {
      head = true;
    } else {
      per_block[t->layer].insert(last_component(*peft_module_of(name)));
    }
  }
  bool grid = per_block.empty() || (per_block.begin()->first == 0 &&
                                    per_block.rbegin()->first == int64_t(per_block.size()) - 1);
  for (const auto& [layer, set] : per_block) grid = grid && set == per_block.begin()->second;
  json targets = json::array();
  if (grid) {
    for (const ModuleInfo& m : kModules) {  // in a fixed order
      const bool used = std::string(m.peft) == "lm_head"
                            ? head
                            : !per_block.empty() && per_block.begin()->second.count(m.peft) > 0;
      if (used) targets.push_back(m.peft);
    }
  } else {
    for (const std::string& name : order) targets.push_back(*peft_module_of(name));
  }

  json config = json::object();
  config["peft_type"] = "LORA";
  config["task_type"] = "CAUSAL_LM";
  config["base_model_name_or_path"] = "";
  config["r"] = rank;
  config["lora_alpha"] = json_number(adapter.alpha);
  config["lora_dropout"] = json_number(adapter.dropout);
  config["use_rslora"] = adapter.rslora;
  config["target_modules"] = targets;
  config["bias"] = "none";
  config["fan_in_fan_out"] = false;
  config["modules_to_save"] = nullptr;
  config["rank_pattern"] = json::object();
  config["alpha_pattern"] = json::object();
  config["inference_mode"] = true;
  config["init_lora_weights"] = true;
  config["use_dora"] = false;
  const std::string config_text = config.dump(2) + "\n";

  SafetensorsWriter st;
  st.set_metadata("format", "pt");
  for (const std::string& name : order) {
    const LoraLayer& l = adapter.layers.at(name);
    const std::string prefix = std::string(kKeyPrefix) + *peft_module_of(name);
    st.add_f32(prefix + ".lora_A.weight", {l.rank, l.n_in}, l.a.data());
    st.add_f32(prefix + ".lora_B.weight", {l.n_out, l.rank}, l.b.data());
  }

  // Into a temporary folder beside the target, renamed into place.
  std::string target = fs::path(dir).lexically_normal().string();
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  if (target.empty() || target == "." || target == "..") fail(dir, ": not a folder name to write");
  std::error_code ec;
  const bool exists = fs::exists(target, ec);
  if (exists) {
    if (!fs::is_directory(target, ec)) fail(dir, ": exists and is not a folder");
    for (const fs::directory_entry& e : fs::directory_iterator(target, ec)) {
      const std::string n = e.path().filename().string();
      if (n != kConfigFile && n != kWeightsFile) {
        fail(dir, ": exists and holds ", n, "; not replacing a folder with other files in it");
      }
    }
    if (ec) fail(dir, ": cannot list the folder: ", ec.message());
  }
  const std::string tmp = make_temp_dir(target, ".tmp-", dir);
  TreeGuard tmp_guard(tmp);
  {
    const std::string p = tmp + "/" + kConfigFile;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(config_text.data(), std::streamsize(config_text.size()));
    out.close();
    if (!out) fail(dir, ": cannot write ", p);
  }
  st.write(tmp + "/" + kWeightsFile);

  if (exists) {
    // Move the old folder aside (rename onto an empty folder replaces it), then put the new
    // one in place, then drop the old one.
    const std::string old = make_temp_dir(target, ".old-", dir);
    TreeGuard old_guard(old);
    fs::rename(target, old, ec);
    if (ec) fail(dir, ": cannot move the existing folder aside: ", ec.message());
    fs::rename(tmp, target, ec);
    if (ec) {
      std::error_code ec2;
      fs::rename(old, target, ec2);
      if (ec2) {
        old_guard.release();
        fail(dir, ": cannot rename ", tmp, " into place: ", ec.message(),
             "; the previous files are in ", old);
      }
      fail(dir, ": cannot rename ", tmp, " into place: ", ec.message());
    }
  } else {
    fs::rename(tmp, target, ec);
    if (ec) fail(dir, ": cannot rename ", tmp, " into place: ", ec.message());
  }
  tmp_guard.release();
}

}  // namespace trit::engine
