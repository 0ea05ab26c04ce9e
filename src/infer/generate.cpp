#include "infer/generate.h"

#include <chrono>
#include <cmath>

#include "core/clock.h"
#include "core/error.h"
#include "core/numeric.h"
#include "infer/text_stream.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
GenerateStats generate(Session& session, const std::vector<int32_t>& prompt_in,
                       const GenerateOptions& opts, const Tokenizer* tokenizer) {
  GenerateStats stats;
  std::vector<int32_t> prompt = prompt_in;
  if (prompt.empty()) {
    if (session.n_past() == 0) fail("generate: the prompt is empty");
    prompt.push_back(session.tokens().back());  // its logits again
    session.truncate(session.n_past() - 1);
  }
  const int64_t n_vocab = session.model().hparams().n_vocab;
  Sampler sampler(opts.sampler);
  TextStream stream(opts.stop);
  std::vector<float> logits;
  auto cancelled = [&] { return opts.cancel && opts.cancel->load(); };

  auto t0 = std::chrono::steady_clock::now();
  stats.n_prompt = int64_t(prompt_in.size());
  if (cancelled()) {
    stats.stop_reason = StopReason::Cancelled;
    return stats;
  }
  if (!session.eval(prompt, logits, false, opts.cancel)) {
    stats.stop_reason = StopReason::Cancelled;
    stats.prompt_seconds = seconds_since(t0);
    return stats;
  }
  std::vector<int32_t> history = session.tokens();  // for the repetition penalty
  stats.prompt_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  bool text_open = true;  // on_text has not asked to stop
  while (true) {
    if (opts.n_predict >= 0 && stats.n_generated >= opts.n_predict) {
      stats.stop_reason = StopReason::MaxTokens;
      break;
    }
    if (cancelled()) {
      stats.stop_reason = StopReason::Cancelled;
      break;
    }
    const int32_t id = sampler.sample(logits.data(), n_vocab, history);
    ++stats.n_generated;
    if (opts.stop_at_end && tokenizer && tokenizer->is_end_of_generation(id)) {
      stats.stop_reason = StopReason::EndOfGeneration;
      break;
    }
    history.push_back(id);
    stats.tokens.push_back(id);
    if (opts.n_logprobs >= 0) {
      stats.logprobs.push_back(token_logprob(logits.data(), n_vocab, id, opts.n_logprobs));
      if (opts.on_logprob) opts.on_logprob(stats.logprobs.back());
    }
    if (opts.on_token && !opts.on_token(id)) {
      stats.stop_reason = StopReason::Callback;
      break;
    }
    if (tokenizer) {
      const std::string piece = stream.push(tokenizer->token_to_piece(id));
      if (!piece.empty() && opts.on_text && !opts.on_text(piece)) {
        text_open = false;
        stats.stop_reason = StopReason::Callback;
        break;
      }
      if (stream.stopped()) {
        stats.stop_reason = StopReason::StopString;
        break;
      }
    }
    if (opts.n_predict >= 0 && stats.n_generated >= opts.n_predict) {
      stats.stop_reason = StopReason::MaxTokens;
      break;
    }
    if (session.n_past() >= session.n_ctx()) {
      stats.stop_reason = StopReason::ContextFull;
      break;
    }
    session.eval({id}, logits);
  }
  if (tokenizer) {
    const std::string tail = stream.finish();
    if (!tail.empty() && text_open && opts.on_text) opts.on_text(tail);
    stats.text = stream.text();
  }
  stats.generate_seconds = seconds_since(t0);
  return stats;
}

PerplexityResult perplexity(const Model& model, const std::vector<int32_t>& tokens, int64_t n_ctx,
                            Backend& backend, const ForwardOptions& opts,
                            const std::function<void(int64_t, int64_t, double)>& progress) {
  if (n_ctx < 2) fail("perplexity: the context must hold at least 2 tokens");
  const int64_t n_chunks = int64_t(tokens.size()) / n_ctx;
  if (n_chunks == 0) {
    fail("perplexity: the text has ", tokens.size(), " tokens, fewer than one context of ", n_ctx,
         " (lower -c)");
  }
  const int64_t n_vocab = model.hparams().n_vocab;
  PerplexityResult r;
  r.n_chunks = n_chunks;
  double nll = 0;
  std::vector<float> logits;
  Session session(model, n_ctx, backend, opts, std::min<int64_t>(n_ctx, 128));
  for (int64_t c = 0; c < n_chunks; ++c) {
    session.truncate(0);
    const std::vector<int32_t> chunk(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    session.eval(chunk, logits, true);
    for (int64_t t = 0; t + 1 < n_ctx; ++t) {
      const float* row = logits.data() + t * n_vocab;
      nll += log_sum_exp(row, n_vocab) - double(row[chunk[size_t(t + 1)]]);
      ++r.n_scored;
    }
    if (progress) progress(c + 1, n_chunks, std::exp(nll / double(r.n_scored)));
  }
  r.mean_nll = nll / double(r.n_scored);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace trit::engine
