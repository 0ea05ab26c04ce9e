// LoRA adapters: scaling, target names, key parsing and checks, and PEFT-style initialisation.
#include "core/lora.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <set>
#include <sstream>
#include <tuple>

#include "core/error.h"

namespace trit::engine {
namespace {

struct TargetInfo {
  const char* short_name;
  const char* suffix;
};

// In the order lora_target_suffixes returns them: the block's linear layers, then the head.
constexpr TargetInfo kTargets[] = {
    {"q", "attn_q"},      {"k", "attn_k"},  {"v", "attn_v"},      {"o", "attn_output"},
    {"gate", "ffn_gate"}, {"up", "ffn_up"}, {"down", "ffn_down"}, {"head", "output"},
};
constexpr size_t kHeadIndex = 7;

std::string valid_targets() {
  std::string s = "all";
  for (const TargetInfo& t : kTargets) s += std::string(", ") + t.short_name;
  return s;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return std::string(s.substr(b, e - b));
}

bool parse_index(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 9) return false;
  if (s.size() > 1 && s[0] == '0') return false;  // one spelling per layer
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// Sort key of a layer name: (block, position in kTargets); the head after every block.
std::tuple<int64_t, size_t, std::string> order_key(const std::string& name) {
  const auto t = parse_lora_layer_name(name);
  if (!t) return {INT64_MAX, 0, name};
  size_t pos = 0;
  while (pos < kHeadIndex && t->what != kTargets[pos].suffix) ++pos;
  return {t->layer < 0 ? INT64_MAX - 1 : t->layer, pos, name};
}

}  // namespace

float LoraAdapter::scaling(int64_t rank) const {
  if (rank <= 0) fail("lora: scaling for rank ", rank, ": rank must be positive");
  return rslora ? alpha / std::sqrt(float(rank)) : alpha / float(rank);
}

std::vector<std::string> lora_target_suffixes(const std::string& targets) {
  std::vector<bool> want(std::size(kTargets), false);
  bool any = false;
  size_t start = 0;
  while (start <= targets.size()) {
    size_t comma = targets.find(',', start);
    if (comma == std::string::npos) comma = targets.size();
    const std::string name = trim(std::string_view(targets).substr(start, comma - start));
    start = comma + 1;
    if (name.empty()) {
      fail("lora: targets '", targets, "': empty target name (valid: ", valid_targets(), ")");
    }
    if (name == "all") {
      for (size_t i = 0; i < kHeadIndex; ++i) want[i] = true;
      any = true;
      continue;
    }
    bool found = false;
    for (size_t i = 0; i < std::size(kTargets); ++i) {
      if (name == kTargets[i].short_name || name == kTargets[i].suffix) {
        want[i] = true;
        found = true;
      }
    }
    if (!found) {
      fail("lora: targets '", targets, "': unknown target '", name, "' (valid: ", valid_targets(),
           ")");
    }
    any = true;
  }
  if (!any) fail("lora: no targets given (valid: ", valid_targets(), ")");
  std::vector<std::string> out;
  for (size_t i = 0; i < std::size(kTargets); ++i) {
    if (want[i]) out.emplace_back(kTargets[i].suffix);
  }
  return out;
}

std::string lora_target_short_name(std::string_view suffix) {
  for (const TargetInfo& t : kTargets) {
    if (suffix == t.suffix) return t.short_name;
  }
  fail("lora: '", suffix, "' is not a LoRA target layer");
}

std::optional<LoraTarget> parse_lora_layer_name(std::string_view name) {
  if (name == "output.weight") return LoraTarget{-1, "output"};
  constexpr std::string_view prefix = "blk.", suffix = ".weight";
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix)) {
    return std::nullopt;
  }
  const std::string_view mid =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());  // "3.attn_q"
  const size_t dot = mid.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  LoraTarget t;
  if (!parse_index(mid.substr(0, dot), &t.layer)) return std::nullopt;
  t.what = std::string(mid.substr(dot + 1));
  const auto& linear = block_linear_names();
  if (std::find(linear.begin(), linear.end(), t.what) == linear.end()) return std::nullopt;
  return t;
}

std::string lora_layer_name(const LoraTarget& t) {
  return t.layer < 0 ? std::string("output.weight") : block_tensor_name(t.layer, t.what);
}

void lora_validate(const LoraAdapter& adapter, std::string_view where) {
  if (!std::isfinite(adapter.alpha)) fail(where, ": alpha is ", adapter.alpha, ", not finite");
  if (!(adapter.dropout >= 0.0f && adapter.dropout < 1.0f)) {
    fail(where, ": dropout is ", adapter.dropout, ", expected 0 <= dropout < 1");
  }
  if (adapter.base_arch.empty()) fail(where, ": base architecture is empty");
  if (adapter.layers.empty()) fail(where, ": the adapter has no layers");
  constexpr int64_t kMaxDim = int64_t(1) << 24;
  for (const auto& [name, l] : adapter.layers) {
    if (!parse_lora_layer_name(name)) {
      fail(where, ": layer ", name,
           ": not a linear layer LoRA can adapt (expected blk.N.<linear>.weight or "
           "output.weight)");
    }
    if (l.rank <= 0 || l.rank > kMaxDim || l.n_in <= 0 || l.n_in > kMaxDim || l.n_out <= 0 ||
        l.n_out > kMaxDim) {
      fail(where, ": layer ", name, ": rank ", l.rank, ", n_in ", l.n_in, ", n_out ", l.n_out,
           " must be 1..", kMaxDim);
    }
    if (int64_t(l.a.size()) != l.rank * l.n_in) {
      fail(where, ": layer ", name, ": A holds ", l.a.size(), " values, expected rank ", l.rank,
           " x n_in ", l.n_in);
    }
    if (int64_t(l.b.size()) != l.n_out * l.rank) {
      fail(where, ": layer ", name, ": B holds ", l.b.size(), " values, expected n_out ", l.n_out,
           " x rank ", l.rank);
    }
  }
}

std::vector<std::string> lora_layer_order(const LoraAdapter& adapter) {
  std::vector<std::string> names;
  for (const auto& kv : adapter.layers) names.push_back(kv.first);
  std::sort(names.begin(), names.end(),
            [](const std::string& x, const std::string& y) { return order_key(x) < order_key(y); });
  return names;
}

std::string lora_summary(const LoraAdapter& adapter) {
  std::vector<bool> used(std::size(kTargets), false);
  std::set<int64_t> blocks, ranks;
  for (const auto& [name, l] : adapter.layers) {
    ranks.insert(l.rank);
    const auto t = parse_lora_layer_name(name);
    if (!t) continue;
    if (t->layer >= 0) blocks.insert(t->layer);
    for (size_t i = 0; i < std::size(kTargets); ++i) {
      if (t->what == kTargets[i].suffix) used[i] = true;
    }
  }
  std::string targets;
  for (size_t i = 0; i < kHeadIndex; ++i) {
    if (used[i]) targets += (targets.empty() ? "" : ", ") + std::string(kTargets[i].short_name);
  }
  if (!targets.empty())
    targets += cat(" in ", blocks.size(), blocks.size() == 1 ? " block" : " blocks");
  if (used[kHeadIndex]) targets += targets.empty() ? "head" : "; head";
  std::string rank = ranks.empty() ? "?" : std::to_string(*ranks.begin());
  if (ranks.size() > 1) rank += cat("..", *ranks.rbegin());
  std::ostringstream alpha;
  alpha << adapter.alpha;
  return cat(adapter.layers.size(), adapter.layers.size() == 1 ? " layer (" : " layers (", targets,
             "), rank ", rank, ", alpha ", alpha.str(), adapter.rslora ? ", rsLoRA" : "");
}

}  // namespace trit::engine
