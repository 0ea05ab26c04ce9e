// The C API (include/trit/trit.h) over the C++ API: handles that own the C++ objects and the
// strings of their results, and the C options structs turned into the C++ ones, for models,
// sessions, training and evaluation (devices and tools: c_api_tools.cpp; statuses and the last
// error: c_api_guard.h).
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "api/c_api_guard.h"
#include "trit/trit.h"
#include "trit/trit.hpp"

struct trit_adapter {
  trit::Adapter adapter;
  std::string path, summary;
};

struct trit_model {
  trit::Model model;
  std::string device;
  trit_model_info info{};
  std::deque<trit_adapter> adapters;  // a deque: handles keep pointing at their entry
};

struct trit_session {
  trit::Session session;
  trit::GenerateResult last;    // what the last generate or chat returned (the result's strings)
  std::vector<float> logprobs;  // last's log-probabilities, flat
  std::vector<trit_token_logprob> top;  // and its likeliest tokens, n_top a token
};

struct trit_trainer {
  trit::Trainer trainer;
  trit::TrainResult last;  // what the last run returned (the result's strings)
  // The files a failure of the run may name: the data, the output and what is written beside
  // it, the checkpoints, the adapter trained further, the checkpoint resumed.
  std::array<std::string, 5> files;
};

using trit::capi::bad_argument;
using trit::capi::dup;
using trit::capi::guard;
using trit::capi::require;
using trit::capi::require_array;
using trit::capi::str;
using trit::capi::view;
using trit::capi::warning_callback;

namespace {

std::vector<trit::AdapterScale> adapter_scales(const trit_adapter_scale* a, size_t n,
                                               const char* fn) {
  require_array(a, n, fn, "options.adapters");
  std::vector<trit::AdapterScale> out;
  for (size_t i = 0; i < n; ++i) {
    if (!a[i].adapter) {
      bad_argument(fn, ": options.adapters[", std::to_string(i), "].adapter is NULL");
    }
    out.push_back({a[i].adapter->adapter, a[i].scale});
  }
  return out;
}

std::vector<trit::ChatMessage> chat_messages(const trit_chat_message* m, size_t n, const char* fn) {
  require_array(m, n, fn, "messages");
  std::vector<trit::ChatMessage> out;
  for (size_t i = 0; i < n; ++i) {
    if (!m[i].role) bad_argument(fn, ": messages[", std::to_string(i), "].role is NULL");
    if (!m[i].content) bad_argument(fn, ": messages[", std::to_string(i), "].content is NULL");
    out.push_back({m[i].role, m[i].content});
  }
  return out;
}

// The C++ options, checked here so that a bad value is an invalid argument rather than a
// failure of the model's file.
trit::ModelOptions model_options(const trit_model_options& o, const char* fn) {
  const std::string device = str(o.device);
  const bool numbered = device.rfind("vulkan:", 0) == 0 && device.size() > 7 &&
                        device.find_first_not_of("0123456789", 7) == std::string::npos;
  if (!(device.empty() || device == "auto" || device == "cpu" || device == "vulkan" || numbered)) {
    bad_argument(fn, ": device '", device,
                 "' is not one of auto, cpu, vulkan, vulkan:N (N a number of trit devices)");
  }
  if (o.threads < 0) {
    bad_argument(fn, ": threads is ", std::to_string(o.threads),
                 ", expected 0 (every core) or more");
  }
  if (o.max_buffer_mb < 0) {
    bad_argument(fn, ": max_buffer_mb is ", std::to_string(o.max_buffer_mb),
                 ", expected 0 (the device's limit) or more");
  }
  if (o.mem_budget_mb < 0) {
    bad_argument(fn, ": mem_budget_mb is ", std::to_string(o.mem_budget_mb),
                 ", expected 0 (none) or more");
  }
  trit::ModelOptions mo;
  mo.device = device;
  mo.threads = o.threads;
  mo.max_buffer_mb = o.max_buffer_mb;
  mo.mem_budget_mb = o.mem_budget_mb;
  mo.act_quant = o.act_quant;
  mo.activation = o.activation ? o.activation : "";
  mo.cache_type = o.cache_type ? o.cache_type : "";
  mo.on_warning = warning_callback(o.on_warning, o.user);
  return mo;
}

// The model's info for C, its strings the model's.
void fill_info(trit_model& m) {
  m.device = m.model.device();
  const trit::ModelInfo& i = m.model.info();
  trit_model_info& c = m.info;
  c.path = i.path.c_str();
  c.arch = i.arch.c_str();
  c.activation = i.activation.c_str();
  c.family = i.family.c_str();
  c.activation_source = i.activation_source.c_str();
  c.n_vocab = i.n_vocab;
  c.n_embd = i.n_embd;
  c.n_ff = i.n_ff;
  c.n_layer = i.n_layer;
  c.n_head = i.n_head;
  c.n_head_kv = i.n_head_kv;
  c.n_ctx_train = i.n_ctx_train;
  c.tied_head = i.tied_head;
  c.has_tokenizer = i.has_tokenizer;
  c.has_embedded_adapter = i.has_embedded_adapter;
  c.chat_template = i.chat_template.c_str();
  c.bos = i.has_tokenizer ? m.model.bos() : -1;
  c.eos = i.has_tokenizer ? m.model.eos() : -1;
  c.device = m.device.c_str();
  c.device_fallback = m.model.device_fallback().c_str();
}

trit::GenerateOptions generate_options(const trit_generate_options& o, const char* fn) {
  trit::GenerateOptions g;
  g.max_tokens = o.max_tokens;
  g.logprobs = o.logprobs;
  g.sampling = {.temperature = o.sampling.temperature,
                .top_k = o.sampling.top_k,
                .top_p = o.sampling.top_p,
                .min_p = o.sampling.min_p,
                .repeat_penalty = o.sampling.repeat_penalty,
                .repeat_last_n = o.sampling.repeat_last_n,
                .frequency_penalty = o.sampling.frequency_penalty,
                .presence_penalty = o.sampling.presence_penalty,
                .logit_bias = {},
                .seed = o.sampling.seed};
  require_array(o.sampling.logit_bias, o.sampling.n_logit_bias, fn, "options.sampling.logit_bias");
  for (size_t i = 0; i < o.sampling.n_logit_bias; ++i) {
    g.sampling.logit_bias.emplace_back(o.sampling.logit_bias[i].token,
                                       o.sampling.logit_bias[i].bias);
  }
  require_array(o.stop, o.n_stop, fn, "options.stop");
  for (size_t i = 0; i < o.n_stop; ++i) {
    if (!o.stop[i]) bad_argument(fn, ": options.stop[", std::to_string(i), "] is NULL");
    g.stop.emplace_back(o.stop[i]);
  }
  g.ignore_eos = o.ignore_eos;
  g.adapters = adapter_scales(o.adapters, o.n_adapters, fn);
  if (o.on_text) {
    g.on_text = [cb = o.on_text, user = o.user](std::string_view piece) {
      const std::string text(piece);  // NUL-terminated for C
      return cb(text.c_str(), text.size(), user) != 0;
    };
  }
  g.parse_special = o.parse_special;
  return g;
}

trit_stop_reason stop_reason_of(trit::StopReason r) {
  switch (r) {
    case trit::StopReason::MaxTokens:
      return TRIT_STOP_MAX_TOKENS;
    case trit::StopReason::EndOfGeneration:
      return TRIT_STOP_END_OF_GENERATION;
    case trit::StopReason::StopString:
      return TRIT_STOP_STRING;
    case trit::StopReason::Callback:
      return TRIT_STOP_CALLBACK;
    case trit::StopReason::Cancelled:
      return TRIT_STOP_CANCELLED;
    case trit::StopReason::ContextFull:
      return TRIT_STOP_CONTEXT_FULL;
  }
  return TRIT_STOP_MAX_TOKENS;
}

// Keeps the result in the session (its strings) and points *out at it.
void keep_result(trit_session* s, trit::GenerateResult r, trit_generate_result* out) {
  s->last = std::move(r);
  if (!out) return;
  const trit::GenerateResult& k = s->last;
  out->text = k.text.c_str();
  out->text_len = k.text.size();
  out->tokens = k.tokens.data();
  out->n_tokens = k.tokens.size();
  out->stop_reason = stop_reason_of(k.stop_reason);
  out->n_prompt = k.n_prompt;
  out->n_cached = k.n_cached;
  out->n_generated = k.n_generated;
  out->prompt_seconds = k.prompt_seconds;
  out->generate_seconds = k.generate_seconds;
  s->logprobs.clear();
  s->top.clear();
  for (const trit::TokenLogprob& t : k.logprobs) {
    s->logprobs.push_back(t.logprob);
    for (const auto& [id, lp] : t.top) s->top.push_back({id, lp});
  }
  const bool any = !k.logprobs.empty();
  out->logprobs = any ? s->logprobs.data() : nullptr;
  out->top = any && !s->top.empty() ? s->top.data() : nullptr;
  out->n_top = any ? k.logprobs[0].top.size() : 0;
}

trit::TrainOptions train_options(const trit_train_options& o) {
  trit::TrainOptions t;
  t.data = str(o.data);
  t.output = str(o.output);
  if (o.targets && *o.targets) t.targets = o.targets;
  t.rank = o.rank;
  t.alpha = o.alpha;
  t.rslora = o.rslora;
  t.dropout = o.dropout;
  t.init_adapter = str(o.init_adapter);
  t.lr = o.lr;
  if (o.schedule && *o.schedule) t.schedule = o.schedule;
  t.warmup = o.warmup;
  t.weight_decay = o.weight_decay;
  t.grad_clip = o.grad_clip;
  t.epochs = o.epochs;
  t.steps = o.steps;
  t.ctx = o.ctx;
  t.batch = o.batch;
  t.grad_accum = o.grad_accum;
  t.pack_tokens = o.pack_tokens;
  t.mask_prompt = o.mask_prompt;
  t.chat_template = str(o.chat_template);
  t.grad_checkpointing = o.grad_checkpointing;
  t.seed = o.seed;
  t.val_every = o.val_every;
  t.val_examples = o.val_examples;
  t.save_every = o.save_every;
  t.max_bad_steps = o.max_bad_steps;
  t.checkpoint_dir = str(o.checkpoint_dir);
  t.resume = str(o.resume);
  return t;
}

trit_train_progress progress_of(const trit::TrainProgress& p) {
  trit_train_progress c{};
  switch (p.kind) {
    case trit::TrainProgress::Kind::Message:
      c.kind = TRIT_TRAIN_MESSAGE;
      break;
    case trit::TrainProgress::Kind::Step:
      c.kind = TRIT_TRAIN_STEP;
      break;
    case trit::TrainProgress::Kind::Validation:
      c.kind = TRIT_TRAIN_VALIDATION;
      break;
    case trit::TrainProgress::Kind::Checkpoint:
      c.kind = TRIT_TRAIN_CHECKPOINT;
      break;
  }
  c.step = p.step;
  c.total_steps = p.total_steps;
  c.epoch = p.epoch;
  c.loss = p.loss;
  c.lr = p.lr;
  c.grad_norm = p.grad_norm;
  c.tokens_per_s = p.tokens_per_s;
  c.peak_mib = p.peak_mib;
  c.eta_s = p.eta_s;
  c.elapsed_s = p.elapsed_s;
  c.val_loss = p.val_loss;
  c.checkpoint = p.checkpoint.c_str();
  c.line = p.line.c_str();
  return c;
}

}  // namespace

extern "C" {

// ---- status, errors, memory, version ----

const char* trit_last_error(void) {
  return trit::capi::last_error.c_str();
}

const char* trit_status_name(trit_status status) {
  switch (status) {
    case TRIT_OK:
      return "ok";
    case TRIT_ERROR_INVALID_ARGUMENT:
      return "invalid argument";
    case TRIT_ERROR_IO:
      return "i/o";
    case TRIT_ERROR_DEVICE:
      return "device";
    case TRIT_ERROR_OUT_OF_MEMORY:
      return "out of memory";
    case TRIT_ERROR_UNKNOWN:
      return "unknown";
  }
  return "unknown";
}

const char* trit_version(void) {
  return TRIT_VERSION_STRING;
}

void trit_string_free(char* text) {
  std::free(text);
}

void trit_tokens_free(int32_t* tokens) {
  std::free(tokens);
}

// ---- models ----

trit_model_options trit_model_options_default(void) {
  trit_model_options o{};
  o.act_quant = true;
  return o;
}

trit_status trit_model_open(const char* path, const trit_model_options* options,
                            trit_model** model) {
  const char* const fn = __func__;
  if (model) *model = nullptr;
  return guard(TRIT_ERROR_IO, {view(path)}, [&] {
    require(path, fn, "path");
    require(model, fn, "model");
    const trit::ModelOptions mo =
        model_options(options ? *options : trit_model_options_default(), fn);
    auto m = std::unique_ptr<trit_model>(new trit_model{trit::Model::open(path, mo), {}, {}, {}});
    fill_info(*m);
    *model = m.release();
  });
}

void trit_model_close(trit_model* model) {
  delete model;
}

trit_status trit_model_get_info(const trit_model* model, trit_model_info* info) {
  const char* const fn = __func__;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(model, fn, "model");
    require(info, fn, "info");
    *info = model->info;
  });
}

trit_status trit_model_tokenize(const trit_model* model, const char* text, bool add_bos,
                                bool parse_special, int32_t** tokens, size_t* n_tokens) {
  const char* const fn = __func__;
  if (tokens) *tokens = nullptr;
  if (n_tokens) *n_tokens = 0;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(model, fn, "model");
    require(text, fn, "text");
    require(tokens, fn, "tokens");
    require(n_tokens, fn, "n_tokens");
    const std::vector<int32_t> t = model->model.tokenize(text, add_bos, parse_special);
    auto* p = static_cast<int32_t*>(std::malloc(std::max<size_t>(t.size(), 1) * sizeof(int32_t)));
    if (!p) throw std::bad_alloc();
    if (!t.empty()) std::memcpy(p, t.data(), t.size() * sizeof(int32_t));
    *tokens = p;
    *n_tokens = t.size();
  });
}

trit_status trit_model_detokenize(const trit_model* model, const int32_t* tokens, size_t n_tokens,
                                  char** text, size_t* length) {
  const char* const fn = __func__;
  if (text) *text = nullptr;
  if (length) *length = 0;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(model, fn, "model");
    require_array(tokens, n_tokens, fn, "tokens");
    require(text, fn, "text");
    const std::string s = model->model.detokenize({tokens, n_tokens});
    *text = dup(s);
    if (length) *length = s.size();
  });
}

trit_status trit_model_render_chat(const trit_model* model, const trit_chat_message* messages,
                                   size_t n_messages, bool add_generation_prompt,
                                   const char* template_name, char** text) {
  const char* const fn = __func__;
  if (text) *text = nullptr;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(model, fn, "model");
    require(text, fn, "text");
    const auto m = chat_messages(messages, n_messages, fn);
    *text = dup(model->model.render_chat(m, add_generation_prompt, str(template_name)));
  });
}

trit_status trit_model_load_adapter(trit_model* model, const char* path, trit_adapter** adapter) {
  const char* const fn = __func__;
  if (adapter) *adapter = nullptr;
  return guard(TRIT_ERROR_IO, {view(path)}, [&] {
    require(model, fn, "model");
    require(path, fn, "path");
    require(adapter, fn, "adapter");
    trit::Adapter a = model->model.load_adapter(path);
    model->adapters.push_back({a, a.path(), a.summary()});
    *adapter = &model->adapters.back();
  });
}

const char* trit_adapter_path(const trit_adapter* adapter) {
  return adapter ? adapter->path.c_str() : "";
}

const char* trit_adapter_summary(const trit_adapter* adapter) {
  return adapter ? adapter->summary.c_str() : "";
}

// ---- sessions ----

trit_session_options trit_session_options_default(void) {
  const trit::SessionOptions d;
  return {d.n_ctx, d.n_batch};
}

trit_status trit_session_create(trit_model* model, const trit_session_options* options,
                                trit_session** session) {
  const char* const fn = __func__;
  if (session) *session = nullptr;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(model, fn, "model");
    require(session, fn, "session");
    const trit_session_options o = options ? *options : trit_session_options_default();
    *session = new trit_session{trit::Session(model->model, {o.n_ctx, o.n_batch}), {}, {}, {}};
  });
}

void trit_session_free(trit_session* session) {
  delete session;
}

trit_generate_options trit_generate_options_default(void) {
  const trit::GenerateOptions d;
  trit_generate_options o{};
  o.max_tokens = d.max_tokens;
  o.sampling = {.temperature = d.sampling.temperature,
                .top_k = d.sampling.top_k,
                .top_p = d.sampling.top_p,
                .min_p = d.sampling.min_p,
                .repeat_penalty = d.sampling.repeat_penalty,
                .repeat_last_n = d.sampling.repeat_last_n,
                .frequency_penalty = d.sampling.frequency_penalty,
                .presence_penalty = d.sampling.presence_penalty,
                .logit_bias = nullptr,
                .n_logit_bias = 0,
                .seed = d.sampling.seed};
  o.ignore_eos = d.ignore_eos;
  o.parse_special = d.parse_special;
  o.logprobs = d.logprobs;
  return o;
}

const char* trit_stop_reason_name(trit_stop_reason reason) {
  switch (reason) {
    case TRIT_STOP_MAX_TOKENS:
      return trit::stop_reason_name(trit::StopReason::MaxTokens);
    case TRIT_STOP_END_OF_GENERATION:
      return trit::stop_reason_name(trit::StopReason::EndOfGeneration);
    case TRIT_STOP_STRING:
      return trit::stop_reason_name(trit::StopReason::StopString);
    case TRIT_STOP_CALLBACK:
      return trit::stop_reason_name(trit::StopReason::Callback);
    case TRIT_STOP_CANCELLED:
      return trit::stop_reason_name(trit::StopReason::Cancelled);
    case TRIT_STOP_CONTEXT_FULL:
      return trit::stop_reason_name(trit::StopReason::ContextFull);
  }
  return "unknown";
}

trit_status trit_session_generate(trit_session* session, const char* prompt,
                                  const trit_generate_options* options,
                                  trit_generate_result* result) {
  const char* const fn = __func__;
  if (result) *result = {};
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(session, fn, "session");
    require(prompt, fn, "prompt");
    const trit_generate_options o = options ? *options : trit_generate_options_default();
    const trit::GenerateOptions g = generate_options(o, fn);
    keep_result(session, session->session.generate(std::string_view(prompt), g), result);
  });
}

trit_status trit_session_chat(trit_session* session, const trit_chat_message* messages,
                              size_t n_messages, const trit_generate_options* options,
                              trit_generate_result* result) {
  const char* const fn = __func__;
  if (result) *result = {};
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(session, fn, "session");
    const auto m = chat_messages(messages, n_messages, fn);
    const trit_generate_options o = options ? *options : trit_generate_options_default();
    const trit::GenerateOptions g = generate_options(o, fn);
    keep_result(session, session->session.chat(m, g, str(o.chat_template)), result);
  });
}

void trit_session_cancel(trit_session* session) {
  if (session) session->session.cancel();
}

void trit_session_reset(trit_session* session) {
  if (session) session->session.reset();
}

int64_t trit_session_n_past(const trit_session* session) {
  return session ? session->session.n_past() : 0;
}

int64_t trit_session_n_ctx(const trit_session* session) {
  return session ? session->session.n_ctx() : 0;
}

// ---- training ----

trit_train_options trit_train_options_default(void) {
  const trit::TrainOptions d;
  trit_train_options o{};
  o.targets = "all";
  o.rank = d.rank;
  o.alpha = d.alpha;
  o.rslora = d.rslora;
  o.dropout = d.dropout;
  o.lr = d.lr;
  o.schedule = "constant";
  o.warmup = d.warmup;
  o.weight_decay = d.weight_decay;
  o.grad_clip = d.grad_clip;
  o.epochs = d.epochs;
  o.steps = d.steps;
  o.ctx = d.ctx;
  o.batch = d.batch;
  o.grad_accum = d.grad_accum;
  o.pack_tokens = d.pack_tokens;
  o.mask_prompt = d.mask_prompt;
  o.grad_checkpointing = d.grad_checkpointing;
  o.seed = d.seed;
  o.val_every = d.val_every;
  o.val_examples = d.val_examples;
  o.save_every = d.save_every;
  o.max_bad_steps = d.max_bad_steps;
  return o;
}

trit_status trit_trainer_create(trit_model* model, const trit_train_options* options,
                                trit_trainer** trainer) {
  const char* const fn = __func__;
  if (trainer) *trainer = nullptr;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {}, [&] {
    require(model, fn, "model");
    require(options, fn, "options");
    require(trainer, fn, "trainer");
    const trit::TrainOptions o = train_options(*options);
    auto t =
        std::unique_ptr<trit_trainer>(new trit_trainer{trit::Trainer(model->model, o), {}, {}});
    t->files = {o.data, std::filesystem::path(o.output).replace_extension().string(),
                o.checkpoint_dir, o.init_adapter, o.resume == "latest" ? "" : o.resume};
    if (options->on_progress) {
      t->trainer.on_progress(
          [cb = options->on_progress, user = options->user](const trit::TrainProgress& p) {
            const trit_train_progress c = progress_of(p);
            cb(&c, user);
          });
    }
    *trainer = t.release();
  });
}

void trit_trainer_free(trit_trainer* trainer) {
  delete trainer;
}

trit_status trit_trainer_run(trit_trainer* trainer, trit_train_result* result) {
  if (result) *result = {};
  if (!trainer) {
    return guard(TRIT_ERROR_INVALID_ARGUMENT, {},
                 [] { require(nullptr, "trit_trainer_run", "trainer"); });
  }
  return guard(TRIT_ERROR_INVALID_ARGUMENT, trainer->files, [&] {
    trainer->last = trainer->trainer.run();
    if (!result) return;
    const trit::TrainResult& r = trainer->last;
    result->steps_done = r.steps_done;
    result->stopped = r.stopped;
    result->last_loss = r.last_loss;
    result->last_val_loss = r.last_val_loss;
    result->adapter_path = r.adapter_path.c_str();
    result->metrics_path = r.metrics_path.c_str();
    result->plot_path = r.plot_path.c_str();
    result->last_checkpoint = r.last_checkpoint.c_str();
  });
}

void trit_trainer_pause(trit_trainer* trainer) {
  if (trainer) trainer->trainer.pause();
}

void trit_trainer_resume(trit_trainer* trainer) {
  if (trainer) trainer->trainer.resume();
}

void trit_trainer_cancel(trit_trainer* trainer) {
  if (trainer) trainer->trainer.cancel();
}

// ---- evaluation ----

trit_eval_options trit_eval_options_default(void) {
  const trit::EvalOptions d;
  trit_eval_options o{};
  o.ctx = d.ctx;
  o.mask_prompt = d.mask_prompt;
  o.exact_match = d.exact_match;
  o.max_new = d.max_new;
  return o;
}

trit_status trit_evaluate(trit_model* model, const char* data_file,
                          const trit_eval_options* options, trit_eval_result* result) {
  const char* const fn = __func__;
  if (result) *result = {};
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {view(data_file)}, [&] {
    require(model, fn, "model");
    require(data_file, fn, "data_file");
    require(result, fn, "result");
    const trit_eval_options o = options ? *options : trit_eval_options_default();
    trit::EvalOptions e;
    e.ctx = o.ctx;
    e.mask_prompt = o.mask_prompt;
    e.chat_template = str(o.chat_template);
    e.exact_match = o.exact_match;
    e.max_new = o.max_new;
    e.adapters = adapter_scales(o.adapters, o.n_adapters, fn);
    if (o.on_progress) {
      e.on_progress = [cb = o.on_progress, user = o.user](std::string_view phase, int64_t done,
                                                          int64_t total) {
        cb(std::string(phase).c_str(), done, total, user);
      };
    }
    e.on_warning = warning_callback(o.on_warning, o.user);
    const trit::EvalResult r = trit::evaluate(model->model, data_file, e);
    std::snprintf(result->kind, sizeof result->kind, "%s", r.kind.c_str());
    result->n_rows = r.n_rows;
    result->n_examples = r.n_examples;
    result->n_targets = r.n_targets;
    result->loss = r.loss;
    result->perplexity = r.perplexity;
    result->has_exact_match = r.has_exact_match;
    result->exact_scored = r.exact_scored;
    result->exact_matched = r.exact_matched;
    result->exact_accuracy = r.exact_accuracy;
  });
}

}  // extern "C"
