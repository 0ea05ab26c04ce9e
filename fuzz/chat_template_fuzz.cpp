// Chat templates: a Jinja text recognised as one of the built-in families (or not), then a
// conversation rendered with it and tokenized with special tokens parsed, as `trit chat` and
// the server do. The input is records split by 0x1E: the Jinja text, then one record a message
// (its first byte picks the role, the rest is the content).
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "fuzz_input.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace trit::engine;
  static const auto model = Model::load(trit::fuzz::shipped_model());
  const std::string_view in = trit::fuzz::as_text(data, size);
  std::vector<std::string_view> records;
  for (size_t at = 0;;) {
    const size_t next = in.find('\x1e', at);
    records.push_back(in.substr(at, next == std::string_view::npos ? next : next - at));
    if (next == std::string_view::npos) break;
    at = next + 1;
  }
  std::string family = ChatTemplate::detect(records[0]);
  static const char* const kFamilies[] = {"bitnet", "chatml", "llama3"};
  if (family.empty()) family = kFamilies[size % 3];
  const ChatTemplate chat = ChatTemplate::builtin(family);
  static const char* const kRoles[] = {"system", "user", "assistant"};
  std::vector<ChatMessage> messages;
  for (size_t i = 1; i < records.size(); ++i) {
    if (records[i].empty()) continue;
    messages.push_back({kRoles[uint8_t(records[i][0]) % 3], std::string(records[i].substr(1))});
  }
  trit::fuzz::refusing([&] {
    const std::string text = chat.render(messages, size % 2 == 0);
    (void)model->tokenizer()->encode(text, true, true);
  });
  return 0;
}
