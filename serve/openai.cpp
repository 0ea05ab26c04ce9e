#include "serve/openai.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>

#include "serve/http_error.h"

namespace trit::serve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw HttpError(400, "'" + field + "' " + what, field);
}

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& body, const char* name, double lo, double hi, double fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) bad(name, "must be a number, got " + v->dump());
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad(name,
        "must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " + v->dump());
  }
  return x;
}

int64_t integer(const json& body, const char* name, int64_t lo, int64_t hi, int64_t fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number_integer()) bad(name, "must be an integer, got " + v->dump());
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)
                        ? INT64_MAX
                        : v->get<int64_t>();
  if (x < lo || x > hi) {
    bad(name, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                  v->dump());
  }
  return x;
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(name, "must be true or false, got " + v->dump());
  return v->get<bool>();
}

// A message's content: a string, or OpenAI's array of parts of which text ones are read.
std::string content_text(const json& c, const std::string& where) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return "";
  if (!c.is_array()) bad(where, "must be a string or an array of text parts");
  std::string text;
  for (const json& part : c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      bad(where, "holds a part that is not {\"type\": \"text\", \"text\": \"...\"}");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<int32_t> chat_prompt(const json& body, const Model& model) {
  const json* msgs = field(body, "messages");
  if (!msgs) bad("messages", "is required");
  if (!msgs->is_array() || msgs->empty()) bad("messages", "must be a non-empty array");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(where, "must be an object");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) bad(where + ".role", "must be a string");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer") {
      bad(where + ".role", "must be system, user or assistant, got " + role->dump());
    }
    const auto c = m.find("content");
    messages.push_back({r == "developer" ? "system" : r,
                        c == m.end() ? "" : content_text(*c, where + ".content")});
  }
  const std::string text = model.render_chat(messages, true);
  return model.tokenize(text, true, true);
}

std::vector<int32_t> text_prompt(const json& body, const Model& model) {
  const json* p = field(body, "prompt");
  if (!p) bad("prompt", "is required");
  if (p->is_string()) return model.tokenize(p->get<std::string>(), true, true);
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    return model.tokenize((*p)[0].get<std::string>(), true, true);
  }
  if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
    std::vector<int32_t> ids;
    for (const json& t : *p) {
      if (!t.is_number_integer()) bad("prompt", "mixes token ids with other values");
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id >= model.info().n_vocab) {
        bad("prompt", "holds token id " + std::to_string(id) + ", outside the vocabulary of " +
                          std::to_string(model.info().n_vocab));
      }
      ids.push_back(int32_t(id));
    }
    return ids;
  }
  bad("prompt", "must be a string, an array of one string, or an array of token ids");
}

}  // namespace

json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) throw HttpError(400, "the request body is not valid JSON");
  if (!j.is_object()) throw HttpError(400, "the request body must be a JSON object");
  return j;
}

TokenizeRequest parse_tokenize(const std::string& text) {
  const json body = parse_body(text);
  const auto content = body.find("content");
  if (content == body.end() || !content->is_string()) {
    throw HttpError(400, "'content' must be a string", "content");
  }
  auto flag = [&](const char* key, bool fallback) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      throw HttpError(400, std::string("'") + key + "' must be true or false", key);
    }
    return it->get<bool>();
  };
  TokenizeRequest t;
  t.content = content->get<std::string>();
  t.add_special = flag("add_special", false);
  t.parse_special = flag("parse_special", true);
  t.with_pieces = flag("with_pieces", false);
  return t;
}

std::vector<int32_t> parse_detokenize(const std::string& text, int64_t n_vocab) {
  const json body = parse_body(text);
  const auto tokens = body.find("tokens");
  if (tokens == body.end() || !tokens->is_array()) {
    throw HttpError(400, "'tokens' must be an array of token ids", "tokens");
  }
  std::vector<int32_t> ids;
  for (const json& t : *tokens) {
    const bool in_vocab =
        t.is_number_integer() &&
        (t.is_number_unsigned() ? t.get<uint64_t>() < uint64_t(n_vocab)
                                : t.get<int64_t>() >= 0 && t.get<int64_t>() < n_vocab);
    if (!in_vocab) {
      throw HttpError(400,
                      "'tokens' holds " + t.dump() + ", not a token id of the vocabulary of " +
                          std::to_string(n_vocab),
                      "tokens");
    }
    ids.push_back(t.get<int32_t>());
  }
  return ids;
}

std::vector<float> parse_adapter_scales(const std::string& text, size_t n_adapters) {
  const json body = json::parse(text, nullptr, false);
  if (body.is_discarded() || !body.is_array()) {
    throw HttpError(400, "the body must be an array of {\"id\", \"scale\"}");
  }
  std::vector<float> scales(n_adapters, 0.0f);  // unlisted adapters: 0
  for (const json& e : body) {
    if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer()) {
      throw HttpError(400, "each entry must be {\"id\": N, \"scale\": S}", "id");
    }
    const int64_t id = e["id"].is_number_unsigned() && e["id"].get<uint64_t>() > uint64_t(INT64_MAX)
                           ? INT64_MAX
                           : e["id"].get<int64_t>();
    if (id < 0 || id >= int64_t(n_adapters)) {
      throw HttpError(400,
                      "id " + e["id"].dump() + " names no adapter (the server has " +
                          std::to_string(n_adapters) + ")",
                      "id");
    }
    // A float holds the scale: a number beyond its range would not convert (undefined).
    const auto s = e.find("scale");
    if (s == e.end() || !s->is_number() || !std::isfinite(s->get<double>()) ||
        std::fabs(s->get<double>()) > double(std::numeric_limits<float>::max())) {
      throw HttpError(400,
                      "adapter " + std::to_string(id) +
                          " needs a numeric \"scale\" within "
                          "a float's range",
                      "scale");
    }
    scales[size_t(id)] = s->get<float>();
  }
  return scales;
}

namespace {

// OpenAI's "logit_bias": {"<token id>": bias in [-100, 100]}; or llama-server's array form,
// [[id, bias], ...], where a bias of false bans the token.
std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body, int64_t n_vocab) {
  std::vector<std::pair<int32_t, float>> out;
  const json* lb = field(body, "logit_bias");
  if (!lb) return out;
  auto take = [&](const std::string& where, int64_t id, const json& v) {
    if (id < 0 || id >= n_vocab) {
      bad("logit_bias", "token " + where + " is outside the vocabulary (0 to " +
                            std::to_string(n_vocab - 1) + ")");
    }
    if (v.is_boolean() && !v.get<bool>()) {
      out.emplace_back(int32_t(id), -std::numeric_limits<float>::infinity());
      return;
    }
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < -100 ||
        v.get<double>() > 100) {
      bad("logit_bias", "the bias of token " + where +
                            " must be a number between -100 and 100 (or false), got " + v.dump());
    }
    out.emplace_back(int32_t(id), float(v.get<double>()));
  };
  if (lb->is_object()) {
    for (const auto& [key, v] : lb->items()) {
      int64_t id = -1;
      const auto [end, err] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (err != std::errc() || end != key.data() + key.size()) {
        bad("logit_bias", "keys must be token ids, got " + json(key).dump());
      }
      take(json(key).dump(), id, v);
    }
  } else if (lb->is_array()) {
    for (const json& e : *lb) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_number_integer()) {
        bad("logit_bias", "entries must be [token id, bias], got " + e.dump());
      }
      const int64_t id = e[0].is_number_unsigned() && e[0].get<uint64_t>() > uint64_t(INT64_MAX)
                             ? INT64_MAX
                             : e[0].get<int64_t>();
      take(e[0].dump(), id, e[1]);
    }
  } else {
    bad("logit_bias", "must be an object of token ids and biases, got " + lb->dump());
  }
  return out;
}

// Fields that would change what the answer means and that trit serve does not do: refused by
// name rather than ignored (a client asking for a tool call or for JSON must not get plain text
// as if it were one). Their "off" values pass.
void refuse_unsupported(const json& body, bool chat) {
  for (const char* name : {"tools", "functions"}) {
    const json* v = field(body, name);
    if (v && !(v->is_array() && v->empty())) {
      bad(name, "is not supported: trit serve does not call tools or functions");
    }
  }
  if (const json* v = field(body, "tool_choice");
      v &&
      !(v->is_string() && (v->get<std::string>() == "none" || v->get<std::string>() == "auto"))) {
    bad("tool_choice", "is not supported: trit serve does not call tools");
  }
  if (const json* v = field(body, "response_format")) {
    const json* type = v->is_object() ? field(*v, "type") : nullptr;
    if (!type || !type->is_string() || type->get<std::string>() != "text") {
      bad("response_format",
          "is not supported beyond {\"type\": \"text\"}: trit serve does not constrain the "
          "output to JSON");
    }
  }
  if (chat) return;
  if (boolean(body, "echo", false)) bad("echo", "is not supported: the prompt is not repeated");
  if (const json* v = field(body, "suffix");
      v && !(v->is_string() && v->get<std::string>().empty())) {
    bad("suffix", "is not supported: trit serve does not insert text");
  }
  if (const json* v = field(body, "best_of");
      v && !(v->is_number_integer() && v->get<int64_t>() == 1)) {
    bad("best_of", "must be 1 (one completion per request), got " + v->dump());
  }
}

}  // namespace

CompletionRequest parse_completion(const std::string& text, bool chat, const Model& model,
                                   int64_t n_adapters, const std::string& served) {
  const json body = parse_body(text);
  // A request naming another model is not this server's to answer (OpenAI's 404): the model's
  // id, its file name and the file name without .gguf all name it; no "model" means this one.
  if (const auto m = body.find("model"); m != body.end() && !m->is_null() && !served.empty()) {
    if (!m->is_string()) throw HttpError(400, "'model' must be a string", "model");
    const std::string want = *m;
    const std::string file = std::filesystem::path(model.info().path).filename().string();
    const std::string stem = std::filesystem::path(file).stem().string();
    if (!want.empty() && want != served && want != file && want != stem) {
      throw HttpError(404,
                      "the model '" + want + "' is not served here; this server serves '" + served +
                          "' (GET /v1/models)",
                      "model");
    }
  }
  CompletionRequest r;
  r.chat = chat;
  GenerateOptions& g = r.options;
  // OpenAI's defaults: 16 tokens for a completion, until the end for a chat.
  const int64_t max_default = chat ? -1 : 16;
  g.max_tokens = integer(body, "max_tokens", -1, INT32_MAX, max_default);
  g.max_tokens = integer(body, "max_completion_tokens", -1, INT32_MAX, g.max_tokens);
  g.max_tokens = integer(body, "n_predict", -1, INT32_MAX, g.max_tokens);  // llama-server's
  SamplingOptions& s = g.sampling;
  s.temperature = float(number(body, "temperature", 0, 2, 1.0));
  s.top_p = float(number(body, "top_p", 0, 1, 1.0));
  s.top_k = int32_t(integer(body, "top_k", 0, INT32_MAX, 0));
  s.min_p = float(number(body, "min_p", 0, 1, 0.0));
  s.repeat_penalty = float(number(body, "repeat_penalty", 0, 10, 1.0));
  s.repeat_last_n = int32_t(integer(body, "repeat_last_n", -1, INT32_MAX, s.repeat_last_n));
  s.frequency_penalty = float(number(body, "frequency_penalty", -2, 2, 0.0));
  s.presence_penalty = float(number(body, "presence_penalty", -2, 2, 0.0));
  s.logit_bias = parse_logit_bias(body, model.info().n_vocab);
  s.seed = uint64_t(integer(body, "seed", INT64_MIN, INT64_MAX, 0));
  refuse_unsupported(body, chat);
  if (const json* n = field(body, "n"); n && (!n->is_number_integer() || n->get<int64_t>() != 1)) {
    bad("n", "must be 1 (one choice per request), got " + n->dump());
  }
  // Chat: "logprobs": true with "top_logprobs" 0..20; completions: "logprobs" 0..5 (the number
  // of likeliest tokens), as OpenAI takes them.
  if (chat) {
    const bool on = boolean(body, "logprobs", false);
    const int64_t top = integer(body, "top_logprobs", 0, 20, -1);
    if (top >= 0 && !on) bad("top_logprobs", "needs \"logprobs\": true");
    if (on) g.logprobs = int32_t(std::max<int64_t>(top, 0));
  } else if (const json* lp = field(body, "logprobs");
             lp && !(lp->is_boolean() && !lp->get<bool>())) {
    g.logprobs = int32_t(integer(body, "logprobs", 0, 5, 0));
  }
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      g.stop = {stop->get<std::string>()};
    } else if (stop->is_array() && stop->size() <= 4) {
      for (const json& s1 : *stop) {
        if (!s1.is_string() || s1.get<std::string>().empty()) {
          bad("stop", "must hold non-empty strings");
        }
        g.stop.push_back(s1.get<std::string>());
      }
    } else {
      bad("stop", "must be a string or an array of up to 4 strings");
    }
    if (g.stop.size() == 1 && g.stop[0].empty()) g.stop.clear();
  }
  g.ignore_eos = boolean(body, "ignore_eos", false);
  r.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "must be an object");
    r.include_usage = boolean(*so, "include_usage", false);
  }
  if (const json* lora = field(body, "lora")) {
    if (!lora->is_array()) bad("lora", "must be an array of {\"id\", \"scale\"}");
    std::vector<std::pair<int64_t, float>> list;
    for (const json& e : *lora) {
      if (!e.is_object()) bad("lora", "must be an array of {\"id\", \"scale\"}");
      const int64_t id = integer(e, "id", 0, INT64_MAX, -1);
      if (id < 0) bad("lora", "entries need an \"id\"");
      if (id >= n_adapters) {
        bad("lora", "id " + std::to_string(id) + " names no adapter (the server has " +
                        std::to_string(n_adapters) + ")");
      }
      list.emplace_back(id, float(number(e, "scale", -100, 100, 1.0)));
    }
    r.lora = std::move(list);
  }
  r.prompt = chat ? chat_prompt(body, model) : text_prompt(body, model);
  return r;
}

json timings(const GenerateResult& r) {
  const double prompt_ms = r.prompt_seconds * 1e3, gen_ms = r.generate_seconds * 1e3;
  return {{"cache_n", r.n_cached},
          {"prompt_n", r.n_prompt - r.n_cached},
          {"prompt_ms", prompt_ms},
          {"prompt_per_second",
           prompt_ms > 0 ? double(r.n_prompt - r.n_cached) * 1e3 / prompt_ms : 0.0},
          {"predicted_n", r.n_generated},
          {"predicted_ms", gen_ms},
          {"predicted_per_second", gen_ms > 0 ? double(r.n_generated) * 1e3 / gen_ms : 0.0},
          {"queue_ms", r.queue_seconds * 1e3}};
}

json usage(const GenerateResult& r) {
  return {{"prompt_tokens", r.n_prompt},
          {"completion_tokens", r.n_generated},
          {"total_tokens", r.n_prompt + r.n_generated},
          {"prompt_tokens_details", {{"cached_tokens", r.n_cached}}}};
}

namespace {

json header(const ReplyHeader& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

}  // namespace

json logprobs_json(const Model& model, bool chat, std::span<const TokenLogprob> tokens,
                   std::span<const int64_t> offsets) {
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
  };
  if (chat) {
    json content = json::array();
    for (const TokenLogprob& t : tokens) {
      const std::string piece = model.token_text(t.token);
      json top = json::array();
      for (const auto& [id, lp] : t.top) {
        const std::string p = model.token_text(id);
        top.push_back({{"token", p}, {"logprob", lp}, {"bytes", bytes(p)}});
      }
      content.push_back({{"token", piece},
                         {"logprob", t.logprob},
                         {"bytes", bytes(piece)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json toks = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const TokenLogprob& t = tokens[i];
    toks.push_back(model.token_text(t.token));
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[model.token_text(id)] = lp;
    tops.push_back(top);
    offs.push_back(offsets[i]);
  }
  return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

size_t logprobs_in_text(const Model& model, const GenerateResult& r,
                        std::vector<int64_t>* offsets) {
  offsets->clear();
  int64_t at = 0;
  for (const TokenLogprob& t : r.logprobs) {
    if (at >= int64_t(r.text.size())) break;
    offsets->push_back(at);
    at += int64_t(model.token_text(t.token).size());
  }
  return offsets->size();
}

json completion_response(const ReplyHeader& h, const GenerateResult& r, const json& logprobs) {
  json j = header(h, h.chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", stop_reason_name(r.stop_reason)}};
  choice["logprobs"] = logprobs;
  if (h.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  } else {
    choice["text"] = r.text;
  }
  j["choices"] = json::array({choice});
  j["usage"] = usage(r);
  j["timings"] = timings(r);
  return j;
}

json text_chunk(const ReplyHeader& h, const std::string& piece, bool first, const json& logprobs) {
  json j = header(h, h.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", nullptr}};
  choice["logprobs"] = logprobs;
  if (h.chat) {
    choice["delta"] =
        first ? json{{"role", "assistant"}, {"content", piece}} : json{{"content", piece}};
  } else {
    choice["text"] = piece;
  }
  j["choices"] = json::array({choice});
  return j;
}

json final_chunk(const ReplyHeader& h, const GenerateResult& r, const json& logprobs) {
  json j = header(h, h.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", stop_reason_name(r.stop_reason)}};
  choice["logprobs"] = logprobs;
  if (h.chat) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  j["choices"] = json::array({choice});
  j["timings"] = timings(r);
  return j;
}

json usage_chunk(const ReplyHeader& h, const GenerateResult& r) {
  json j = header(h, h.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage(r);
  return j;
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace trit::serve
