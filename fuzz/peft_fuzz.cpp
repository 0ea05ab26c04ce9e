// A PEFT adapter folder: adapter_config.json and adapter_model.safetensors, each a part of the
// input (the first 4 bytes, little-endian, give the config's length; the rest is the tensors).
#include <cstring>
#include <filesystem>

#include "fuzz_input.h"
#include "io/peft.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t n = 0;
  std::memcpy(&n, data, 4);
  data += 4;
  size -= 4;
  n = uint32_t(std::min<size_t>(n, size));
  const std::string dir = trit::fuzz::scratch_dir() + "/peft";
  std::filesystem::create_directories(dir);
  trit::fuzz::write_input("peft/adapter_config.json", data, n);
  trit::fuzz::write_input("peft/adapter_model.safetensors", data + n, size - n);
  trit::fuzz::refusing([&] { (void)trit::engine::load_peft(dir); });
  return 0;
}
