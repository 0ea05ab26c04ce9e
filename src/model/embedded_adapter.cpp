#include "model/embedded_adapter.h"

#include <cmath>

#include "core/error.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "model/hparams.h"
#include "model/lora_set.h"

namespace trit::engine {

std::optional<EmbeddedAdapter> read_embedded_adapter(const GgufFile& f, const HParams& hp) {
  const std::string& path = f.path();
  const GgufTensor* first = nullptr;
  for (const GgufTensor& t : f.tensors()) {
    if (t.name.ends_with(".lora_a") || t.name.ends_with(".lora_b")) {
      first = &t;
      break;
    }
  }
  const bool has_alpha = f.has(kEmbeddedAlphaKey);
  if (!first && !has_alpha) {
    for (std::string_view key : {kEmbeddedRsloraKey, kEmbeddedScaleKey}) {
      if (f.has(key)) fail(path, ": metadata key '", key, "' without '", kEmbeddedAlphaKey, "'");
    }
    return std::nullopt;
  }
  if (!has_alpha) {
    fail(path, ": tensor ", first->name, ": an adapter tensor in a model file needs the key '",
         kEmbeddedAlphaKey, "' (written by trit merge --mode attach)");
  }
  if (!first) fail(path, ": metadata key '", kEmbeddedAlphaKey, "' but no .lora_a/.lora_b tensors");

  EmbeddedAdapter e;
  LoraAdapter& a = e.adapter;
  a.base_arch = hp.arch;
  a.alpha = f.get_f32(kEmbeddedAlphaKey);
  a.rslora = f.get_bool_or(kEmbeddedRsloraKey, false);
  e.scale = f.get_f32_or(kEmbeddedScaleKey, 1.0f);
  if (!std::isfinite(a.alpha)) fail(path, ": metadata key '", kEmbeddedAlphaKey, "' is ", a.alpha);
  if (!std::isfinite(e.scale)) fail(path, ": metadata key '", kEmbeddedScaleKey, "' is ", e.scale);

  a.layers = read_lora_tensors(f, true);
  lora_validate(a, path);
  check_adapter_against(a, hp, path);
  return e;
}

}  // namespace trit::engine
