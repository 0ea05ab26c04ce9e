// Chat templates: exact rendered text of each family, and recognising a model's Jinja template.
#include "data/chat_template.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "io/gguf.h"

namespace trit::engine {
namespace {

const std::vector<ChatMessage> kChat = {
    {"system", "You are terse."},
    {"user", "  Hi there\n"},
    {"assistant", "Hello."},
    {"user", "2+2?"},
};

TEST(ChatTemplate, BitnetRendersRoleColonContentEot) {
  const ChatTemplate t = ChatTemplate::builtin("bitnet");
  EXPECT_EQ(t.name(), "bitnet");
  EXPECT_EQ(t.render(kChat, true),
            "System: You are terse.<|eot_id|>User: Hi there<|eot_id|>Assistant: Hello.<|eot_id|>"
            "User: 2+2?<|eot_id|>Assistant: ");
  EXPECT_EQ(t.render({{"user", "hi"}}, false), "User: hi<|eot_id|>");
  EXPECT_EQ(t.render({}, true), "Assistant: ");
  EXPECT_EQ(t.render({{"TOOL", "x"}}, false), "Tool: x<|eot_id|>");  // Jinja's capitalize
}

TEST(ChatTemplate, ChatmlKeepsContentAsIs) {
  const ChatTemplate t = ChatTemplate::builtin("chatml");
  EXPECT_EQ(t.render(kChat, true),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\n  Hi there\n<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n"
            "<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(t.render({{"user", "hi"}}, false), "<|im_start|>user\nhi<|im_end|>\n");
}

TEST(ChatTemplate, Llama3Headers) {
  const ChatTemplate t = ChatTemplate::builtin("llama3");
  EXPECT_EQ(t.render(kChat, true),
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t.render({{"user", "hi"}}, false),
            "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
}

TEST(ChatTemplate, UnknownBuiltinThrows) {
  try {
    ChatTemplate::builtin("vicuna");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'vicuna'"), std::string::npos);
  }
}

TEST(ChatTemplate, DetectsFamiliesFromJinja) {
  // microsoft/bitnet-b1.58-2B-4T tokenizer_config.json
  EXPECT_EQ(ChatTemplate::detect(
                "{% set loop_messages = messages %}{% for message in loop_messages %}{% set "
                "content = message['role'] | capitalize + ': '+ message['content'] | trim + "
                "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
                "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
                "'Assistant: ' }}{% endif %}"),
            "bitnet");
  // bitnet.cpp's converter
  EXPECT_EQ(ChatTemplate::detect("{% for message in messages %}{% if message['role'] == 'user' "
                                 "%}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: "
                                 "' + eos_token }}{% endif %}{% endfor %}"),
            "bitnet");
  EXPECT_EQ(ChatTemplate::detect(
                "{% set loop_messages = messages %}{% for message in loop_messages %}{% set "
                "content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
                "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set "
                "content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
                "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' "
                "}}{% endif %}"),
            "llama3");
  EXPECT_EQ(ChatTemplate::detect(
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if "
                "add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
            "chatml");
  EXPECT_EQ(ChatTemplate::detect("{{ bos_token }}[INST] {{ message['content'] }} [/INST]"), "");
  EXPECT_EQ(ChatTemplate::detect(""), "");
}

TEST(ChatTemplate, ForModelFallsBackByArchitecture) {
  const auto path = (std::filesystem::temp_directory_path() /
                     ("trit_chat_template_" + std::to_string(getpid()) + ".gguf"))
                        .string();
  auto family = [&](const std::string& arch, const std::string& jinja,
                    std::vector<std::string> tokens = {}) {
    GgufWriter w;
    w.set_string("general.architecture", arch);
    if (!jinja.empty()) w.set_string("tokenizer.chat_template", jinja);
    if (!tokens.empty()) w.set("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
    w.write(path);
    return ChatTemplate::for_model(*GgufFile::open(path)).name();
  };
  EXPECT_EQ(family("bitnet-b1.58", ""), "bitnet");
  EXPECT_EQ(family("bitnet-b1.58", "{{ '<|im_start|>' }}"), "chatml");
  EXPECT_EQ(family("bitnet", "", {"a", "<|eot_id|>"}), "bitnet");
  EXPECT_EQ(family("bitnet", "", {"<s>", "</s>"}), "chatml");
  EXPECT_EQ(family("llama", ""), "chatml");
  EXPECT_EQ(family("llama", "<|start_header_id|> <|end_header_id|>"), "llama3");
  EXPECT_EQ(family("bitnet-b1.58", "[INST] unknown family"), "bitnet");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace trit::engine
