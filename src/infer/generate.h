// Text generation over a session, and perplexity over a token stream.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "infer/sampler.h"
#include "infer/session.h"

namespace trit::engine {

class Tokenizer;

enum class StopReason { MaxTokens, EndOfGeneration, StopString, Callback, Cancelled, ContextFull };

struct GenerateOptions {
  int64_t n_predict = 128;  // < 0: until the context is full or generation ends
  SamplerOptions sampler;
  bool stop_at_end = true;  // stop at end-of-generation tokens of the tokenizer
  // Generation ends where the text first contains one of these (not part of the text).
  std::vector<std::string> stop;
  // Each sampled token (end-of-generation tokens that stop it excluded); false stops.
  std::function<bool(int32_t)> on_token;
  // Streamed text (whole characters, stop-string starts held back; infer/text_stream.h);
  // false stops. Needs a tokenizer.
  std::function<bool(std::string_view)> on_text;
  // >= 0: each sampled token's log-probability and this many of the likeliest tokens' go to
  // on_logprob (and GenerateStats::logprobs), before its text; -1: none.
  int32_t n_logprobs = -1;
  std::function<void(const TokenLogprob&)> on_logprob;
  // Polled before each token: set, generation ends with StopReason::Cancelled.
  const std::atomic<bool>* cancel = nullptr;
};

struct GenerateStats {
  int64_t n_prompt = 0;
  int64_t n_generated = 0;  // an end-of-generation token that ended it included
  double prompt_seconds = 0;
  double generate_seconds = 0;
  StopReason stop_reason = StopReason::MaxTokens;
  std::vector<int32_t> tokens;         // generated, without the end-of-generation token
  std::string text;                    // their text, without a stop string (with a tokenizer)
  std::vector<TokenLogprob> logprobs;  // one a token of `tokens` (n_logprobs >= 0)
};

// Feeds prompt to the session (which may already hold earlier turns; an empty prompt is
// allowed only when it does, and the last position is then evaluated again), then samples
// tokens. The repetition penalty looks back at the session's tokens and the generated ones.
// tokenizer may be null (no end-of-generation check, no text).
GenerateStats generate(Session& session, const std::vector<int32_t>& prompt,
                       const GenerateOptions& opts, const Tokenizer* tokenizer);

struct PerplexityResult {
  double mean_nll = 0;  // nats per scored token
  double perplexity = 0;
  int64_t n_scored = 0;
  int64_t n_chunks = 0;
};

// Splits tokens into chunks of n_ctx and scores every prediction within a chunk (tokens 1 ..
// n_ctx - 1 given the ones before). progress(chunk, n_chunks, running perplexity).
PerplexityResult perplexity(const Model& model, const std::vector<int32_t>& tokens, int64_t n_ctx,
                            Backend& backend, const ForwardOptions& opts,
                            const std::function<void(int64_t, int64_t, double)>& progress);

}  // namespace trit::engine
