// OpenAI's completion and chat requests and responses (and llama-server's extensions: top_k,
// min_p, repeat_penalty, repeat_last_n, per-request "lora", "timings"): request bodies checked
// field by field into the API's GenerateOptions, results into response bodies and stream chunks.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "trit/model.h"
#include "trit/session.h"

namespace trit::serve {

struct CompletionRequest {
  bool chat = false;
  std::vector<int32_t> prompt;  // the tokens (a chat rendered with the model's template)
  GenerateOptions options;      // sampling, limits and stop strings (adapters: the server's)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // "lora": [{"id", "scale"}]: adapter scales for this request (unlisted ones 0)
  std::optional<std::vector<std::pair<int64_t, float>>> lora;
};

// Parses a /v1/completions (chat false) or /v1/chat/completions body. Throws HttpError 400
// naming the field for bad JSON, a missing or mistyped field or a value out of range.
// n_adapters: the server's adapters (ids of "lora" must be below). served: the model's id; a
// request naming another model gets 404 (empty: any name goes).
CompletionRequest parse_completion(const std::string& body, bool chat, const Model& model,
                                   int64_t n_adapters, const std::string& served = "");

// The JSON body of a request (400 when it is not JSON or not an object).
nlohmann::json parse_body(const std::string& body);

// llama-server's POST /tokenize: {"content", "add_special", "parse_special", "with_pieces"}.
struct TokenizeRequest {
  std::string content;
  bool add_special = false, parse_special = true, with_pieces = false;
};
TokenizeRequest parse_tokenize(const std::string& body);
// POST /detokenize: {"tokens": [ids]}, each an id of a vocabulary of n_vocab tokens.
std::vector<int32_t> parse_detokenize(const std::string& body, int64_t n_vocab);
// POST /lora-adapters: [{"id", "scale"}] for a server of n_adapters adapters; the scale of each
// adapter (unlisted ones 0).
std::vector<float> parse_adapter_scales(const std::string& body, size_t n_adapters);

// What every response and chunk of one request shares.
struct ReplyHeader {
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  std::string model;
  bool chat = false;
};

// The "logprobs" of a choice: tokens' TokenLogprob (GenerateOptions::logprobs), each with the
// byte offset of its text in the generated text. Chat: {"content": [{"token", "logprob",
// "bytes", "top_logprobs"}]}; completions: {"tokens", "token_logprobs", "top_logprobs",
// "text_offset"}.
nlohmann::json logprobs_json(const Model& model, bool chat, std::span<const TokenLogprob> tokens,
                             std::span<const int64_t> offsets);
// The tokens of r.logprobs whose text starts inside r.text (a stop string cuts the rest) and
// their offsets.
size_t logprobs_in_text(const Model& model, const GenerateResult& r, std::vector<int64_t>* offsets);

// The whole response of a request that did not stream (logprobs: logprobs_json's, or null).
nlohmann::json completion_response(const ReplyHeader& h, const GenerateResult& r,
                                   const nlohmann::json& logprobs = nullptr);
// A stream's chunks: a piece of text (the first chat chunk carries the role) with the logprobs
// of the tokens whose text it begins, the last one with the finish reason (and the logprobs of
// tokens not yet sent), and the usage chunk.
nlohmann::json text_chunk(const ReplyHeader& h, const std::string& piece, bool first,
                          const nlohmann::json& logprobs = nullptr);
nlohmann::json final_chunk(const ReplyHeader& h, const GenerateResult& r,
                           const nlohmann::json& logprobs = nullptr);
nlohmann::json usage_chunk(const ReplyHeader& h, const GenerateResult& r);

// llama-server's "timings" object and OpenAI's "usage".
nlohmann::json timings(const GenerateResult& r);
nlohmann::json usage(const GenerateResult& r);

// JSON text of a value whose strings may hold invalid UTF-8 (replaced, never thrown on).
std::string dump(const nlohmann::json& j);

}  // namespace trit::serve
