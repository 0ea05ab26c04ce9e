// A model GGUF: header, metadata, tensor infos, hyperparameters, weights, tokenizer and chat
// template, as `trit run` loads them; a model that loads also tokenizes and detokenizes.
#include "fuzz_input.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = trit::fuzz::write_input("model.gguf", data, size);
  trit::fuzz::refusing([&] {
    auto model = trit::engine::Model::load(path, [](const std::string&) {});
    if (const trit::engine::Tokenizer* tok = model->tokenizer()) {
      const std::vector<int32_t> ids =
          tok->encode("It is a truth <|eot_id|> \xe2\x96\x81", true, true);
      (void)tok->decode(ids, true);
    }
  });
  return 0;
}
