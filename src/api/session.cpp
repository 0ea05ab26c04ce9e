// trit::Session over the engine's session and generation loop: prompts and chats fed with the
// cached prefix reused, per-call adapters, streaming, stop strings and cancellation.
#include "trit/session.h"

#include <algorithm>
#include <cmath>

#include "api/impl.h"
#include "core/error.h"
#include "infer/generate.h"
#include "tokenizer/tokenizer.h"

namespace trit {

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::MaxTokens:
    case StopReason::ContextFull:
      return "length";
    case StopReason::EndOfGeneration:
    case StopReason::StopString:
      return "stop";
    case StopReason::Callback:
    case StopReason::Cancelled:
      return "cancelled";
  }
  return "stop";
}

engine::GenerateOptions engine_generate_options(const GenerateOptions& o, int64_t n_vocab) {
  for (const auto& [id, bias] : o.sampling.logit_bias) {
    if (id < 0 || id >= n_vocab) {
      engine::fail("logit_bias: token ", id, " is outside the vocabulary (0 to ", n_vocab - 1, ")");
    }
    if (std::isnan(bias)) engine::fail("logit_bias: the bias of token ", id, " is not a number");
  }
  if (o.logprobs < -1 || o.logprobs > 20) {
    engine::fail("logprobs: ", o.logprobs, " likeliest tokens asked for; -1 (none) to 20");
  }
  engine::GenerateOptions g;
  g.n_predict = o.max_tokens;
  g.n_logprobs = o.logprobs;
  g.sampler = {.temperature = o.sampling.temperature,
               .top_k = o.sampling.top_k,
               .top_p = o.sampling.top_p,
               .min_p = o.sampling.min_p,
               .repeat_penalty = o.sampling.repeat_penalty,
               .repeat_last_n = o.sampling.repeat_last_n,
               .frequency_penalty = o.sampling.frequency_penalty,
               .presence_penalty = o.sampling.presence_penalty,
               .logit_bias = o.sampling.logit_bias,
               .seed = o.sampling.seed};
  g.stop_at_end = !o.ignore_eos;
  g.stop = o.stop;
  return g;
}

TokenLogprob public_logprob(const engine::TokenLogprob& t) {
  return {t.token, t.logprob, t.top};
}

StopReason public_stop_reason(engine::StopReason reason) {
  switch (reason) {
    case engine::StopReason::MaxTokens:
      return StopReason::MaxTokens;
    case engine::StopReason::EndOfGeneration:
      return StopReason::EndOfGeneration;
    case engine::StopReason::StopString:
      return StopReason::StopString;
    case engine::StopReason::Callback:
      return StopReason::Callback;
    case engine::StopReason::Cancelled:
      return StopReason::Cancelled;
    case engine::StopReason::ContextFull:
      return StopReason::ContextFull;
  }
  return StopReason::MaxTokens;
}

struct Session::Impl {
  Model::Impl& m;
  engine::Session session;
  engine::LoraSet lora;  // the branches the cache was computed with
  std::vector<std::pair<const void*, float>> lora_key;
  std::atomic<bool> cancel{false};

  Impl(Model::Impl& model, int64_t n_ctx, int64_t n_batch)
      : m(model),
        session(*model.model, n_ctx, *model.backend, model.forward_options(nullptr), n_batch),
        lora(model.lora_set({})) {
    session.set_lora(&lora);
  }

  // Sets the call's adapters; a change starts the cache afresh.
  void use_adapters(std::span<const AdapterScale> adapters) {
    auto key = m.lora_key(adapters);
    if (key == lora_key) return;
    lora = m.lora_set(adapters);  // checks the adapters first
    lora_key = std::move(key);
    session.truncate(0);
    session.set_lora(&lora);
  }

  GenerateResult run(const std::vector<int32_t>& full, bool continuing, const GenerateOptions& o);
};

GenerateResult Session::Impl::run(const std::vector<int32_t>& tokens, bool continuing,
                                  const GenerateOptions& o) {
  struct ClearCancel {  // a cancel() ends one call
    std::atomic<bool>& flag;
    ~ClearCancel() { flag.store(false); }
  } clear{cancel};
  use_adapters(o.adapters);
  // The prompt: what follows the cache (continuing), or the part of `tokens` the cache does
  // not already hold.
  int64_t cached = 0;
  std::vector<int32_t> prompt;
  if (continuing) {
    cached = session.n_past();
    prompt = tokens;
  } else {
    cached = session.reuse_prefix(tokens);
    prompt.assign(tokens.begin() + cached, tokens.end());
  }
  if (session.n_past() + int64_t(prompt.size()) > session.n_ctx()) {
    engine::fail("the prompt (", session.n_past() + int64_t(prompt.size()),
                 " tokens) does not fit the session's context of ", session.n_ctx(), " tokens");
  }
  engine::GenerateOptions g = engine_generate_options(o, m.model->hparams().n_vocab);
  if (o.on_text) g.on_text = [&](std::string_view piece) { return o.on_text(piece); };
  if (o.on_logprob) {
    g.on_logprob = [&](const engine::TokenLogprob& t) { o.on_logprob(public_logprob(t)); };
  }
  g.cancel = &cancel;
  const engine::GenerateStats st = engine::generate(session, prompt, g, m.model->tokenizer());
  GenerateResult r;
  r.text = st.text;
  r.tokens = st.tokens;
  for (const engine::TokenLogprob& t : st.logprobs) r.logprobs.push_back(public_logprob(t));
  r.n_prompt = continuing ? int64_t(prompt.size()) : int64_t(tokens.size());
  r.n_cached = continuing ? 0 : cached;
  r.n_generated = st.n_generated;
  r.prompt_seconds = st.prompt_seconds;
  r.generate_seconds = st.generate_seconds;
  r.stop_reason = public_stop_reason(st.stop_reason);
  return r;
}

Session::Session(Model& model, const SessionOptions& options) {
  Model::Impl& m = ApiAccess::impl(model);
  int64_t n_ctx = options.n_ctx;
  if (n_ctx < 0) engine::fail_option("n_ctx", "session: n_ctx must be positive, got ", n_ctx);
  if (n_ctx == 0) n_ctx = std::min<int64_t>(m.model->hparams().n_ctx_train, 4096);
  if (options.n_batch <= 0)
    engine::fail_option("n_batch", "session: n_batch must be positive, got ", options.n_batch);
  impl_ = std::make_unique<Impl>(m, n_ctx, options.n_batch);
}

Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

GenerateResult Session::generate(std::string_view prompt, const GenerateOptions& options) {
  const engine::Tokenizer& tok = impl_->m.tokenizer();
  impl_->use_adapters(options.adapters);  // a change empties the cache: then the prompt opens it
  const bool bos = impl_->session.n_past() == 0 && tok.add_bos_default();
  return impl_->run(tok.encode(prompt, bos, options.parse_special), true, options);
}

GenerateResult Session::generate(std::span<const int32_t> prompt, const GenerateOptions& options) {
  return impl_->run(std::vector<int32_t>(prompt.begin(), prompt.end()), true, options);
}

GenerateResult Session::chat(const std::vector<ChatMessage>& messages,
                             const GenerateOptions& options, const std::string& template_name) {
  const engine::Tokenizer& tok = impl_->m.tokenizer();
  const std::string text = impl_->m.render_chat(messages, true, template_name);
  return impl_->run(tok.encode(text, tok.add_bos_default(), true), false, options);
}

std::vector<float> Session::eval(std::span<const int32_t> tokens,
                                 std::span<const AdapterScale> adapters) {
  if (tokens.empty()) engine::fail("eval: no tokens");
  impl_->use_adapters(adapters);
  std::vector<float> logits;
  impl_->session.eval(std::vector<int32_t>(tokens.begin(), tokens.end()), logits);
  return logits;
}

void Session::cancel() {
  impl_->cancel.store(true);
}

void Session::reset() {
  impl_->session.truncate(0);
}

int64_t Session::n_past() const {
  return impl_->session.n_past();
}

int64_t Session::n_ctx() const {
  return impl_->session.n_ctx();
}

const std::vector<int32_t>& Session::tokens() const {
  return impl_->session.tokens();
}

}  // namespace trit
