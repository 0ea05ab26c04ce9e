// Hugging Face tokenizer.json (+ tokenizer_config.json) to GGUF tokenizer.ggml.* keys.
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace trit::engine {

namespace {

using nlohmann::json;

json load_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

// The member, or nullptr when j is no object or the member is missing or null.
const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string type_of(const json& j) {
  const json* t = member(j, "type");
  return t && t->is_string() ? t->get<std::string>() : std::string();
}

// The components of a normalizer, pre-tokenizer, post-processor or decoder, Sequences flattened.
void flatten(const json* node, std::vector<const json*>& out) {
  if (!node || !node->is_object()) return;
  bool nested = false;
  for (const char* key : {"normalizers", "pretokenizers", "processors", "decoders"}) {
    if (const json* list = member(*node, key); list && list->is_array()) {
      nested = true;
      for (const json& item : *list) flatten(&item, out);
    }
  }
  if (!nested) out.push_back(node);
}

// A pattern {"String": s} or {"Regex": r}, or "".
std::string pattern_of(const json& component) {
  const json* p = member(component, "pattern");
  if (!p) return "";
  for (const char* key : {"String", "Regex"}) {
    if (const json* s = member(*p, key); s && s->is_string()) return s->get<std::string>();
  }
  return "";
}

// A token given as "text" or {"content": "text"} in tokenizer_config.json; "" when absent.
std::string token_text(const json& config, const char* key, const std::string& path) {
  const json* v = member(config, key);
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  if (const json* c = member(*v, "content"); c && c->is_string()) return c->get<std::string>();
  fail(path, ": ", key, ": expected a string or {\"content\": ...}");
}

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

}  // namespace

void tokenizer_json_to_gguf(const std::string& tokenizer_json_path,
                            const std::string& tokenizer_config_path, GgufWriter& out) {
  const std::string& path = tokenizer_json_path;
  const json root = load_json(path);
  if (!root.is_object()) fail(path, ": expected a JSON object");
  const json* model = member(root, "model");
  if (!model || !model->is_object()) fail(path, ": model: missing");
  const std::string model_type = type_of(*model);
  if (!model_type.empty() && model_type != "BPE") {
    fail(path, ": model.type: '", model_type, "' is not supported (trit converts BPE tokenizers)");
  }
  const json* vocab = member(*model, "vocab");
  if (!vocab) fail(path, ": model.vocab: missing");
  if (!vocab->is_object()) fail(path, ": model.vocab: expected an object of token: id");

  // Tokens by id; ids must be unique. Holes (rare) become unused "[PAD<id>]" tokens, but a file
  // whose ids leave most of their range empty is refused before anything is built: one id of
  // millions among a few hundred tokens would make millions of "[PAD<id>]" tokens (found by
  // fuzzing: 15 s and 1.2 GB under the sanitizers for an id of 2,544,838).
  constexpr int64_t kMaxTokens = 1 << 24;
  {
    int64_t given = 0, most = -1;
    auto count = [&](const json& id) {
      if (!id.is_number_integer()) return;
      ++given;
      most = std::max(most, id.get<int64_t>());
    };
    for (auto it = vocab->begin(); it != vocab->end(); ++it) count(it.value());
    if (const json* added = member(root, "added_tokens"); added && added->is_array()) {
      for (const json& a : *added) {
        if (const json* id = member(a, "id")) count(*id);
      }
    }
    if (most >= 2 * given + 1024) {
      fail(path, ": token ids run to ", most, " but only ", given,
           " tokens are given: ", most + 1 - given,
           " ids would have no token (at most half of them may)");
    }
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<bool> present;
  auto place = [&](int64_t id, const std::string& text, int32_t type, const std::string& field,
                   bool may_replace) {
    if (id < 0 || id >= kMaxTokens)
      fail(path, ": ", field, ": id ", id, " of '", text, "' is out of range");
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(id + 1);
      types.resize(id + 1, tok::kUnused);
      present.resize(id + 1, false);
    }
    if (present[id] && !may_replace) {
      fail(path, ": ", field, ": '", tokens[id], "' and '", text, "' both have id ", id);
    }
    tokens[id] = text;
    types[id] = type;
    present[id] = true;
  };
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer()) {
      fail(path, ": model.vocab: the id of '", it.key(), "' is not an integer");
    }
    place(it.value().get<int64_t>(), it.key(), tok::kNormal, "model.vocab", false);
  }
  if (const json* added = member(root, "added_tokens")) {
    if (!added->is_array()) fail(path, ": added_tokens: expected an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const json* id = member(a, "id");
      const json* content = member(a, "content");
      const std::string field = cat("added_tokens[", i, "]");
      if (!id || !id->is_number_integer() || !content || !content->is_string()) {
        fail(path, ": ", field, ": expected {\"id\": integer, \"content\": string, ...}");
      }
      const json* special = member(a, "special");
      const bool is_special = special && special->is_boolean() && special->get<bool>();
      place(id->get<int64_t>(), content->get<std::string>(),
            is_special ? tok::kControl : tok::kUserDefined, field, true);
    }
  }
  if (tokens.empty()) fail(path, ": model.vocab: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!present[i]) tokens[i] = cat("[PAD", i, "]");
  }
  std::unordered_map<std::string_view, int32_t> ids;
  ids.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) ids.emplace(tokens[i], static_cast<int32_t>(i));
  auto id_of = [&](const std::string& text) {
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };

  // Merges: "a b" strings or ["a", "b"] pairs.
  std::vector<std::string> merges;
  if (const json* m = member(*model, "merges")) {
    if (!m->is_array()) fail(path, ": model.merges: expected an array");
    merges.reserve(m->size());
    for (size_t i = 0; i < m->size(); ++i) {
      const json& e = (*m)[i];
      std::string left, right;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.size() > 1 ? s.find(' ', 1) : std::string::npos;
        if (sp == std::string::npos) {
          fail(path, ": model.merges[", i, "]: '", s, "' is not two tokens separated by a space");
        }
        left = s.substr(0, sp);
        right = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        left = e[0].get<std::string>();
        right = e[1].get<std::string>();
      } else {
        fail(path, ": model.merges[", i, "]: expected \"a b\" or [\"a\", \"b\"]");
      }
      for (const std::string* side : {&left, &right}) {
        if (id_of(*side) < 0) {
          fail(path, ": model.merges[", i, "]: '", left, " ", right, "' names unknown token '",
               *side, "'");
        }
      }
      merges.push_back(left + " " + right);
    }
  }

  // Byte-level (GPT-2, llama-3) or SentencePiece-style (U+2581 for spaces, byte fallback)?
  std::vector<const json*> pre, norm, dec, post;
  flatten(member(root, "pre_tokenizer"), pre);
  flatten(member(root, "normalizer"), norm);
  flatten(member(root, "decoder"), dec);
  flatten(member(root, "post_processor"), post);
  auto any_type = [](const std::vector<const json*>& list, std::string_view type) {
    for (const json* c : list) {
      if (type_of(*c) == type) return true;
    }
    return false;
  };
  const bool byte_level = any_type(pre, "ByteLevel") || any_type(dec, "ByteLevel");
  bool spm = any_type(dec, "ByteFallback") || any_type(pre, "Metaspace") ||
             any_type(dec, "Metaspace") || any_type(norm, "Prepend");
  for (const json* c : dec) {
    if (type_of(*c) == "Replace" && pattern_of(*c) == kSpaceMarker) spm = true;
  }
  if (const json* bf = member(*model, "byte_fallback"); bf && bf->is_boolean() && bf->get<bool>()) {
    spm = true;
  }
  if (!byte_level && !spm) {
    fail(path,
         ": pre_tokenizer, decoder: neither ByteLevel nor SentencePiece-style (Metaspace, "
         "Replace of U+2581, ByteFallback); trit cannot convert this tokenizer");
  }

  std::string ggml_model, ggml_pre;
  std::vector<float> scores;
  bool add_space_prefix = false;
  if (byte_level) {
    ggml_model = "gpt2";
    ggml_pre = "gpt2";
    // The Split regex names the pre-tokenizer; other patterns fall back to GPT-2's (lossy).
    for (const json* c : pre) {
      if (type_of(*c) != "Split") continue;
      const std::string re = pattern_of(*c);
      if (re == kLlama3Pattern) ggml_pre = "llama-bpe";
      if (re == kQwen2Pattern) ggml_pre = "qwen2";
    }
  } else {
    ggml_model = "llama";
    ggml_pre = "default";
    // A token's score is minus the rank of the first merge that makes it, so SentencePiece's
    // highest-score-first order replays the merges; tokens no merge makes score lowest.
    scores.assign(tokens.size(), -static_cast<float>(merges.size() + 1));
    for (size_t rank = merges.size(); rank-- > 0;) {
      std::string joined = merges[rank];
      joined.erase(joined.find(' ', 1), 1);
      if (const int32_t id = id_of(joined); id >= 0) scores[id] = -static_cast<float>(rank);
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (types[i] == tok::kNormal && tok::parse_byte_token(tokens[i]) >= 0) types[i] = tok::kByte;
    }
    for (const json* c : norm) {
      const json* p = member(*c, "prepend");
      if (type_of(*c) == "Prepend" && p && p->is_string() &&
          p->get<std::string>() == kSpaceMarker) {
        add_space_prefix = true;
      }
    }
    for (const json* c : pre) {
      if (type_of(*c) != "Metaspace") continue;
      const json* scheme = member(*c, "prepend_scheme");
      const json* aps = member(*c, "add_prefix_space");
      if ((scheme && scheme->is_string() && scheme->get<std::string>() != "never") ||
          (aps && aps->is_boolean() && aps->get<bool>())) {
        add_space_prefix = true;
      }
    }
  }
  int32_t unk = -1;
  if (const json* u = member(*model, "unk_token")) {
    if (!u->is_string()) fail(path, ": model.unk_token: expected a string");
    unk = id_of(u->get<std::string>());
    if (unk < 0) fail(path, ": model.unk_token: '", u->get<std::string>(), "' is not a token");
    types[unk] = tok::kUnknown;
  }

  // bos: the special token the post-processor puts before a single sequence, if any.
  int32_t bos = -1, eos = -1, pad = -1;
  bool add_bos = ggml_model == "llama";
  for (const json* c : post) {
    const json* single = member(*c, "single");
    if (type_of(*c) != "TemplateProcessing" || !single || !single->is_array() || single->empty()) {
      continue;
    }
    add_bos = false;
    if (const json* st = member((*single)[0], "SpecialToken")) {
      if (const json* id = member(*st, "id"); id && id->is_string()) {
        bos = id_of(id->get<std::string>());
        add_bos = bos >= 0;
      }
    }
  }

  std::string chat_template;
  if (!tokenizer_config_path.empty()) {
    const std::string& cpath = tokenizer_config_path;
    const json config = load_json(cpath);
    if (!config.is_object()) fail(cpath, ": expected a JSON object");
    auto config_id = [&](const char* key, int32_t& id) {
      const std::string text = token_text(config, key, cpath);
      if (text.empty()) return;
      id = id_of(text);
      if (id < 0) fail(cpath, ": ", key, ": '", text, "' is not a token of ", path);
    };
    config_id("bos_token", bos);
    config_id("eos_token", eos);
    config_id("pad_token", pad);
    int32_t config_unk = -1;
    config_id("unk_token", config_unk);
    if (config_unk >= 0) unk = config_unk;
    if (const json* a = member(config, "add_bos_token")) {
      if (!a->is_boolean()) fail(cpath, ": add_bos_token: expected true or false");
      add_bos = a->get<bool>();
    }
    if (const json* t = member(config, "chat_template")) {
      if (t->is_string()) {
        chat_template = t->get<std::string>();
      } else if (t->is_array()) {
        // Named templates: take "default", else the first.
        for (size_t i = 0; i < t->size(); ++i) {
          const json* name = member((*t)[i], "name");
          const json* text = member((*t)[i], "template");
          if (!text || !text->is_string()) {
            fail(cpath, ": chat_template[", i, "]: expected {\"name\": ..., \"template\": ...}");
          }
          const bool is_default =
              name && name->is_string() && name->get<std::string>() == "default";
          if (is_default || chat_template.empty()) chat_template = text->get<std::string>();
          if (is_default) break;
        }
      } else {
        fail(cpath, ": chat_template: expected a string or a list of {name, template}");
      }
    }
  }
  if (ggml_model == "llama") {  // SentencePiece's usual ids when the files do not say
    if (bos < 0) bos = id_of("<s>");
    if (eos < 0) eos = id_of("</s>");
  }
  if (add_bos && bos < 0) add_bos = false;

  out.set("tokenizer.ggml.model", GgufValue::string(ggml_model));
  out.set("tokenizer.ggml.pre", GgufValue::string(ggml_pre));
  out.set("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
  if (!scores.empty()) out.set("tokenizer.ggml.scores", GgufValue::f32_array(scores));
  if (ggml_model == "gpt2") out.set("tokenizer.ggml.merges", GgufValue::string_array(merges));
  if (bos >= 0) out.set("tokenizer.ggml.bos_token_id", GgufValue::u32(bos));
  if (eos >= 0) out.set("tokenizer.ggml.eos_token_id", GgufValue::u32(eos));
  if (unk >= 0) out.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(unk));
  if (pad >= 0) out.set("tokenizer.ggml.padding_token_id", GgufValue::u32(pad));
  out.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  if (ggml_model == "llama") {
    out.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(add_space_prefix));
  }
  if (!chat_template.empty()) out.set("tokenizer.chat_template", GgufValue::string(chat_template));
}

}  // namespace trit::engine
