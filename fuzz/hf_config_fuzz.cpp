// A Hugging Face config.json, read into hyperparameters as `trit convert` reads a folder's.
#include "fuzz_input.h"
#include "model/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = trit::fuzz::write_input("config.json", data, size);
  trit::fuzz::refusing([&] { (void)trit::engine::read_hf_config(path); });
  trit::fuzz::refusing([&] { (void)trit::engine::hf_config_to_hparams(path, size % 2 == 0); });
  return 0;
}
