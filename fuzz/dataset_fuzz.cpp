// A JSONL dataset in any of its three formats (text, prompt/completion, messages), tokenized
// with the shipped model's tokenizer and chat template, and made into a batch, as `trit
// finetune` loads one; also read as a plain-text file.
#include "data/chat_template.h"
#include "data/dataset.h"
#include "fuzz_input.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace trit::engine;
  static const auto model = Model::load(trit::fuzz::shipped_model());
  static const ChatTemplate chat = ChatTemplate::for_model(model->file());
  const Tokenizer& tok = *model->tokenizer();
  DatasetOptions opt;
  opt.ctx = 16 + int64_t(size % 48);
  opt.mask_prompt = size % 3 == 0;
  opt.completions_as_chat = size % 5 == 0;
  trit::fuzz::refusing([&] {
    const Dataset d = parse_jsonl(trit::fuzz::as_text(data, size), "data.jsonl", tok, chat, opt,
                                  [](const std::string&) {});
    if (!d.examples.empty()) {
      const std::vector<int64_t> rows = {0, int64_t(d.examples.size()) - 1};
      (void)make_batch(d, rows);
    }
  });
  const std::string path = trit::fuzz::write_input("data.txt", data, size);
  trit::fuzz::refusing([&] { (void)load_text_file(path, tok, opt, [](const std::string&) {}); });
  return 0;
}
