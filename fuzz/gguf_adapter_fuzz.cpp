// A LoRA adapter GGUF, loaded and checked against a model's shapes as `--lora` does.
#include "fuzz_input.h"
#include "io/adapter_gguf.h"
#include "model/lora_set.h"
#include "model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto model = trit::engine::Model::load(trit::fuzz::shipped_model());
  const std::string path = trit::fuzz::write_input("adapter.gguf", data, size);
  trit::fuzz::refusing([&] {
    const trit::engine::LoraAdapter a = trit::engine::load_adapter_gguf(path);
    trit::engine::check_adapter_against(a, model->hparams(), path);
  });
  return 0;
}
