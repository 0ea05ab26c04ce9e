#include "infer/generate.h"

#include <chrono>
#include <cmath>

#include "core/numeric.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

GenerateStats generate(Session& session, const std::vector<int32_t>& prompt,
                       const GenerateOptions& opts, const Tokenizer* tokenizer,
                       const std::function<bool(int32_t)>& on_token) {
  GenerateStats stats;
  if (prompt.empty()) fail("generate: the prompt is empty");
  const int64_t n_vocab = session.model().hparams().n_vocab;
  Sampler sampler(opts.sampler);
  std::vector<int32_t> history = prompt;
  std::vector<float> logits;

  auto t0 = std::chrono::steady_clock::now();
  session.eval(prompt, logits);
  stats.n_prompt = int64_t(prompt.size());
  stats.prompt_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  while (opts.n_predict < 0 || stats.n_generated < opts.n_predict) {
    const int32_t id = sampler.sample(logits.data(), n_vocab, history);
    ++stats.n_generated;
    history.push_back(id);
    const bool end = opts.stop_at_end && tokenizer && tokenizer->is_end_of_generation(id);
    if (end) break;
    if (!on_token(id)) break;
    if (session.n_past() >= session.n_ctx()) break;
    if (opts.n_predict >= 0 && stats.n_generated >= opts.n_predict) break;
    session.eval({id}, logits);
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
