// Text generation with a model: one sequence's KV cache, fed prompts or whole chats, sampling
// and streaming tokens. A new prompt or chat reuses the cache for the tokens it shares with
// what the session already holds (a chat's earlier turns are not computed again).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trit/export.h"
#include "trit/model.h"

namespace trit {

// How the next token is chosen: the logit bias and the penalties (repetition, then frequency and
// presence), then greedy at temperature 0, else top-k, top-p and min-p filtering and
// temperature sampling (llama.cpp's default order).
struct SamplingOptions {
  float temperature = 0.8f;     // <= 0: greedy
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // tokens looked back at for the penalties (< 0: all, 0: none)
  // OpenAI's: a token seen c times in those tokens loses c * frequency_penalty +
  // presence_penalty from its logit. 0: off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // (token id, bias) pairs added to those tokens' logits before anything else (OpenAI's
  // logit_bias; -infinity bans a token). An id outside the vocabulary is an error.
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
};

// A generated token's log-probability under the model (the log-softmax of its logits, before
// the logit bias, the penalties and the temperature: what OpenAI's logprobs report) and the
// likeliest tokens' at that position (falling; ties to the lower id).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

struct GenerateOptions {
  int64_t max_tokens = 128;  // < 0: until an end-of-generation token or a full context
  SamplingOptions sampling;
  // >= 0: each generated token's TokenLogprob, with this many of the likeliest tokens (at most
  // 20), in GenerateResult::logprobs and to on_logprob; -1: none.
  int32_t logprobs = -1;
  // Called with each token's TokenLogprob before the token's text goes to on_text.
  std::function<void(const TokenLogprob&)> on_logprob;
  // Generation ends where the text first contains one of these; the stop string itself is
  // not part of the result (nor streamed).
  std::vector<std::string> stop;
  bool ignore_eos = false;  // keep generating past end-of-generation tokens
  // Adapters for this call, applied after the model's own (embedded) adapter, if any. A change
  // of adapters or scales between calls starts the session's cache afresh.
  std::vector<AdapterScale> adapters;
  // Streaming: called with each new piece of text (whole UTF-8 characters; text that may be
  // the start of a stop string is held back until it is not). Return false to stop.
  std::function<bool(std::string_view piece)> on_text;
  bool parse_special = true;  // special-token text in the prompt becomes the special token
};

enum class StopReason {
  MaxTokens,        // max_tokens generated
  EndOfGeneration,  // the model ended its text
  StopString,       // a stop string appeared
  Callback,         // on_text returned false
  Cancelled,        // Session::cancel()
  ContextFull,      // the session's context is full
};
TRIT_API const char* stop_reason_name(StopReason reason);  // "length", "stop", ... (OpenAI's words)

struct GenerateResult {
  std::string text;                    // the generated text (without a stop string)
  std::vector<int32_t> tokens;         // the generated tokens
  std::vector<TokenLogprob> logprobs;  // one a token (GenerateOptions::logprobs >= 0)
  StopReason stop_reason = StopReason::MaxTokens;
  int64_t n_prompt = 0;  // prompt tokens
  int64_t n_cached = 0;  // of those, taken from the cache instead of computed
  int64_t n_generated = 0;
  double prompt_seconds = 0, generate_seconds = 0;
  double queue_seconds = 0;  // BatchGenerator: waiting for a free slot
  std::string error;         // BatchGenerator: not empty when a pass failed (its message)
};

struct SessionOptions {
  int64_t n_ctx = 0;     // positions the session holds; 0: the model's, at most 4096
  int64_t n_batch = 64;  // prompt tokens computed in one pass
};

class TRIT_API Session {
 public:
  // The model must outlive the session.
  explicit Session(Model& model, const SessionOptions& options = {});
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();

  // Continues the session's text with the prompt, then generates.
  GenerateResult generate(std::string_view prompt, const GenerateOptions& options = {});
  GenerateResult generate(std::span<const int32_t> prompt, const GenerateOptions& options = {});
  // The assistant's reply to a conversation, rendered with the model's chat template (or
  // template_name's). Reuses the cache for the rendered conversation's tokens the session
  // already holds, so a chat that grows turn by turn computes only its new turn.
  GenerateResult chat(const std::vector<ChatMessage>& messages, const GenerateOptions& options = {},
                      const std::string& template_name = "");

  // Appends tokens to the session and returns the last one's logits (n_vocab values).
  std::vector<float> eval(std::span<const int32_t> tokens,
                          std::span<const AdapterScale> adapters = {});

  // From any thread: the running generate() or chat() ends at its next token (or, in its
  // prompt, after the batch of n_batch tokens being computed), with StopReason::Cancelled; when
  // none runs, the next one ends at once.
  void cancel();
  void reset();  // forgets every position
  int64_t n_past() const;
  int64_t n_ctx() const;
  const std::vector<int32_t>& tokens() const;  // what the cache holds

  struct Impl;  // opaque

 private:
  friend struct ApiAccess;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trit
