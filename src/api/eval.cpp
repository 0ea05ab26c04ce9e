// trit::evaluate and trit::perplexity over the engine's evaluation (infer/evaluate.h).
#include "trit/eval.h"

#include "api/impl.h"
#include "core/error.h"
#include "data/chat_template.h"
#include "infer/evaluate.h"
#include "infer/generate.h"
#include "tokenizer/tokenizer.h"

namespace trit {

EvalResult evaluate(Model& model, const std::string& data_file, const EvalOptions& options) {
  Model::Impl& m = ApiAccess::impl(model);
  if (options.ctx < 2)
    engine::fail_option("ctx", "eval: ctx must be at least 2, got ", options.ctx);
  const engine::ChatTemplate chat = options.chat_template.empty()
                                        ? engine::ChatTemplate::for_model(m.model->file())
                                        : engine::ChatTemplate::builtin(options.chat_template);
  engine::EvalOptions opt;
  opt.data.ctx = options.ctx;
  opt.data.mask_prompt = options.mask_prompt;
  opt.max_new = options.max_new;
  opt.exact_match = options.exact_match;
  const engine::LoraSet set = m.lora_set(options.adapters);
  const engine::EvalResult r =
      engine::evaluate_file(*m.model, data_file, chat, opt, *m.backend, m.forward_options(&set),
                            options.on_warning, options.on_progress);
  EvalResult out;
  out.data = r.source;
  out.kind = r.kind;
  out.n_rows = r.n_rows;
  out.n_examples = r.loss.n_examples;
  out.n_targets = r.loss.n_targets;
  out.loss = r.loss.mean_loss;
  out.perplexity = r.loss.perplexity;
  out.has_exact_match = r.has_exact_match;
  out.exact_scored = r.exact.n_scored;
  out.exact_matched = r.exact.n_matched;
  out.exact_accuracy = r.exact.accuracy;
  return out;
}

PerplexityResult perplexity(Model& model, std::string_view text, int64_t ctx,
                            const std::function<void(int64_t, int64_t, double)>& progress,
                            std::span<const AdapterScale> adapters) {
  Model::Impl& m = ApiAccess::impl(model);
  const engine::Tokenizer& tok = m.tokenizer();
  const std::vector<int32_t> tokens = tok.encode(text, tok.add_bos_default(), false);
  const engine::LoraSet set = m.lora_set(adapters);
  const engine::PerplexityResult r =
      engine::perplexity(*m.model, tokens, ctx, *m.backend, m.forward_options(&set), progress);
  return {r.perplexity, r.mean_nll, r.n_scored, r.n_chunks};
}

}  // namespace trit
