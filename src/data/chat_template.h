// Chat templates: the BitNet b1.58 2B4T template, ChatML and llama-3 built in; a model's own
// tokenizer.chat_template (Jinja) is recognised as one of these families by its markers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

class GgufFile;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  // Built-in by name: "bitnet" (2B4T), "chatml", "llama3". Throws on an unknown name.
  static ChatTemplate builtin(std::string_view name);
  // The family of the file's tokenizer.chat_template; without one (or with one of no known
  // family): "bitnet" for architecture bitnet-b1.58, and for bitnet with a <|eot_id|> token
  // (2B4T converted by llama.cpp); chatml otherwise.
  static ChatTemplate for_model(const GgufFile& file);
  // The family a Jinja template text belongs to, or "" when none matches.
  static std::string detect(std::string_view jinja);

  const std::string& name() const { return name_; }
  // Text to tokenise with parse_special = true. The bos token is not included (the
  // tokenizer adds it); add_generation_prompt appends the assistant header.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  explicit ChatTemplate(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

}  // namespace trit::engine
