// Text generation over a session, and perplexity over a token stream.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infer/sampler.h"
#include "infer/session.h"

namespace trit::engine {

class Tokenizer;

struct GenerateOptions {
  int64_t n_predict = 128;  // < 0: until the context is full or generation ends
  SamplerOptions sampler;
  bool stop_at_end = true;  // stop at end-of-generation tokens of the tokenizer
};

struct GenerateStats {
  int64_t n_prompt = 0;
  int64_t n_generated = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
};

// Feeds prompt to the session (which may already hold earlier turns), then samples tokens,
// calling on_token for each (return false to stop). History for the repetition penalty is the
// prompt plus the generated tokens. tokenizer may be null (no end-of-generation check).
GenerateStats generate(Session& session, const std::vector<int32_t>& prompt,
                       const GenerateOptions& opts, const Tokenizer* tokenizer,
                       const std::function<bool(int32_t)>& on_token);

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
