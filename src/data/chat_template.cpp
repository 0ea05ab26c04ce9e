// The built-in chat template families, rendered in C++ (trit has no Jinja engine).
#include "data/chat_template.h"

#include <cctype>

#include "core/error.h"
#include "io/gguf.h"

namespace trit::engine {

namespace {

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

// Jinja's trim: leading and trailing whitespace removed.
std::string_view jinja_trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

// Jinja's capitalize: the first character upper case, the rest lower case.
std::string capitalize(std::string_view s) {
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    out[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return out;
}

// Whether the file's vocabulary has a token with this text.
bool has_token(const GgufFile& file, std::string_view text) {
  const GgufValue* v = file.find("tokenizer.ggml.tokens");
  if (!v || v->type != GgufType::ARRAY) return false;
  for (const auto& t : v->arr.strings) {
    if (t == text) return true;
  }
  return false;
}

}  // namespace

ChatTemplate ChatTemplate::builtin(std::string_view name) {
  if (name == "bitnet" || name == "chatml" || name == "llama3")
    return ChatTemplate(std::string(name));
  fail("chat template '", name, "' is unknown (built-in: bitnet, chatml, llama3)");
}

std::string ChatTemplate::detect(std::string_view jinja) {
  if (contains(jinja, "<|im_start|>")) return "chatml";
  if (contains(jinja, "<|start_header_id|>") && contains(jinja, "<|end_header_id|>")) {
    return "llama3";
  }
  // 2B4T's tokenizer_config.json: "Role: content<|eot_id|>" with capitalised roles.
  if (contains(jinja, "<|eot_id|>") &&
      (contains(jinja, "capitalize") || contains(jinja, "Assistant: "))) {
    return "bitnet";
  }
  // bitnet.cpp's converter writes "Human: ...BITNETAssistant: " into 2B4T GGUF files; the model
  // was tuned on the tokenizer_config.json template, so these get that one.
  if (contains(jinja, "BITNETAssistant")) return "bitnet";
  return "";
}

ChatTemplate ChatTemplate::for_model(const GgufFile& file) {
  const std::string jinja = file.get_string_or("tokenizer.chat_template", "");
  if (std::string family = detect(jinja); !family.empty()) return builtin(family);
  // No template, or one of another family: BitNet b1.58 2B4T (bitnet.cpp's architecture name,
  // or llama.cpp's "bitnet" with the llama-3 vocabulary) gets its own; anything else ChatML.
  const std::string arch = file.get_string_or("general.architecture", "");
  if (arch == "bitnet-b1.58" || (arch == "bitnet" && has_token(file, "<|eot_id|>"))) {
    return builtin("bitnet");
  }
  return builtin("chatml");
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) const {
  std::string out;
  if (name_ == "bitnet") {
    for (const auto& m : messages) {
      out += capitalize(m.role);
      out += ": ";
      out += jinja_trim(m.content);
      out += "<|eot_id|>";
    }
    if (add_generation_prompt) out += "Assistant: ";
  } else if (name_ == "llama3") {
    for (const auto& m : messages) {
      out += "<|start_header_id|>";
      out += m.role;
      out += "<|end_header_id|>\n\n";
      out += jinja_trim(m.content);
      out += "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  } else {  // chatml
    for (const auto& m : messages) {
      out += "<|im_start|>";
      out += m.role;
      out += '\n';
      out += m.content;
      out += "<|im_end|>\n";
    }
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
  }
  return out;
}

}  // namespace trit::engine
