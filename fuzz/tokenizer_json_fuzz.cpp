// A Hugging Face tokenizer.json (and, after a line "#tokenizer_config.json", the
// tokenizer_config.json beside it) converted into GGUF keys as `trit convert` does, the GGUF
// read back into a tokenizer, which then encodes and decodes text.
#include <string>

#include "data/chat_template.h"
#include "fuzz_input.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace trit::engine;
  const std::string_view in = trit::fuzz::as_text(data, size);
  const std::string_view sep = "\n#tokenizer_config.json\n";
  const size_t at = in.find(sep);
  const std::string_view json = in.substr(0, at);
  const std::string tj = trit::fuzz::write_input(
      "tokenizer.json", reinterpret_cast<const uint8_t*>(json.data()), json.size());
  std::string tc;
  if (at != std::string_view::npos) {
    const std::string_view config = in.substr(at + sep.size());
    tc = trit::fuzz::write_input("tokenizer_config.json",
                                 reinterpret_cast<const uint8_t*>(config.data()), config.size());
  }
  trit::fuzz::refusing([&] {
    GgufWriter w;
    w.set_string("general.architecture", size % 2 ? "llama" : "bitnet");
    tokenizer_json_to_gguf(tj, tc, w);
    const std::string path = trit::fuzz::scratch_dir() + "/tokenizer.gguf";
    w.write(path);
    auto file = GgufFile::open(path);
    (void)ChatTemplate::for_model(*file);
    if (auto tok = Tokenizer::from_gguf(*file)) {
      const std::vector<int32_t> ids = tok->encode("hi hey \xC3\xA9\n<s></s>", true, true);
      (void)tok->decode(ids, true);
    }
  });
  return 0;
}
