#include "model/lora_set.h"

#include "core/error.h"

namespace trit::engine {
namespace {

bool bitnet_family(const std::string& arch) {
  return arch == "bitnet" || arch == "bitnet-b1.58";
}

}  // namespace

std::pair<int64_t, int64_t> lora_base_shape(const HParams& hp, const std::string& name,
                                            std::string_view where) {
  const auto t = parse_lora_layer_name(name);
  if (!t) {
    fail(where, ": layer ", name,
         ": not a linear layer LoRA can adapt (expected blk.N.{attn_q,attn_k,attn_v,attn_output,"
         "ffn_gate,ffn_up,ffn_down}.weight or output.weight)");
  }
  if (t->layer < 0) return {hp.n_embd, hp.n_vocab};
  if (t->layer >= hp.n_layer) {
    fail(where, ": layer ", name, ": block ", t->layer, " does not exist (the model has ",
         hp.n_layer, " blocks)");
  }
  return block_linear_shape(hp, t->what);
}

void check_adapter_against(const LoraAdapter& adapter, const HParams& hp,
                           const std::string& where) {
  if (adapter.base_arch != hp.arch &&
      !(bitnet_family(adapter.base_arch) && bitnet_family(hp.arch))) {
    fail(where, ": the adapter is for architecture '", adapter.base_arch, "', the model is '",
         hp.arch, "'");
  }
  for (const std::string& name : lora_layer_order(adapter)) {
    const LoraLayer& l = adapter.layers.at(name);
    const auto [n_in, n_out] = lora_base_shape(hp, name, where);
    if (l.n_in != n_in || l.n_out != n_out) {
      fail(where, ": layer ", name, ": the adapter maps ", l.n_in, " -> ", l.n_out,
           " features, the model's layer ", n_in, " -> ", n_out,
           " (an adapter for another model size?)");
    }
  }
}

LoraTerms resolve_lora(const std::vector<std::pair<const LoraAdapter*, float>>& adapters,
                       const HParams& hp) {
  LoraTerms set;
  set.blocks.resize(size_t(hp.n_layer));
  for (const auto& [adapter, user_scale] : adapters) {
    for (const std::string& name : lora_layer_order(*adapter)) {
      const LoraLayer& layer = adapter->layers.at(name);
      const auto target = parse_lora_layer_name(name);
      if (!target || target->layer >= hp.n_layer) {
        fail("adapter layer ", name, " names no linear layer of the model");
      }
      const auto [n_in, n_out] = lora_base_shape(hp, name, "adapter");
      if (layer.n_in != n_in || layer.n_out != n_out) {
        fail("adapter layer ", name, ": shape ", layer.n_in, " -> ", layer.n_out,
             ", the model's layer is ", n_in, " -> ", n_out);
      }
      std::vector<LoraTerm>& slot =
          target->layer < 0 ? set.head
                            : set.blocks[size_t(target->layer)][linear_index(target->what)];
      slot.push_back({&layer, user_scale * adapter->scaling(layer.rank)});
    }
  }
  return set;
}

bool LoraSet::empty() const {
  if (!head.empty()) return false;
  for (const auto& b : blocks) {
    for (const auto& branches : b) {
      if (!branches.empty()) return false;
    }
  }
  return true;
}

DeviceAdapter::DeviceAdapter(const LoraAdapter& adapter, const HParams& hp, Backend& be,
                             const std::string& where)
    : where_(where) {
  lora_validate(adapter, where);
  check_adapter_against(adapter, hp, where);
  for (const std::string& name : lora_layer_order(adapter)) {
    const LoraLayer& l = adapter.layers.at(name);
    const auto target = parse_lora_layer_name(name);
    Layer layer;
    layer.block = target->layer;
    layer.index = target->layer < 0 ? kLinearCount : linear_index(target->what);
    layer.a = be.tensor(name + ".lora_a", l.rank, l.n_in);
    layer.b = be.tensor(name + ".lora_b", l.n_out, l.rank);
    be.write(*layer.a, 0, l.rank, l.a.data());
    be.write(*layer.b, 0, l.n_out, l.b.data());
    layer.scaling = adapter.scaling(l.rank);
    layers_.push_back(std::move(layer));
  }
}

DeviceAdapter::~DeviceAdapter() = default;

LoraSet lora_set(const HParams& hp,
                 std::span<const std::pair<const DeviceAdapter*, float>> adapters) {
  LoraSet set;
  set.blocks.resize(size_t(hp.n_layer));
  for (const auto& [adapter, user_scale] : adapters) {
    for (const DeviceAdapter::Layer& l : adapter->layers_) {
      if (l.block >= hp.n_layer) fail(adapter->where(), ": adapter for a model of more blocks");
      LoraBranch br;
      br.a = l.a.get();
      br.b = l.b.get();
      br.scale = user_scale * l.scaling;
      if (l.block < 0) {
        set.head.push_back(br);
      } else {
        set.blocks[size_t(l.block)][l.index].push_back(br);
      }
    }
  }
  return set;
}

}  // namespace trit::engine
