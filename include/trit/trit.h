/* trit's C API (C99; usable from C and C++): run and LoRA fine-tune BitNet b1.58 models on CPUs
 * and Vulkan GPUs. A thin layer over the C++ API (trit/trit.hpp) for programs in C and for
 * bindings to other languages; each verb here is the C++ verb of the same name.
 *
 *   trit_model* model;
 *   trit_model_options mo = trit_model_options_default();
 *   if (trit_model_open("model.gguf", &mo, &model) != TRIT_OK) {
 *     fprintf(stderr, "%s\n", trit_last_error());
 *     return 1;
 *   }
 *
 * Errors: every function that can fail returns a trit_status and, when it is not TRIT_OK,
 * leaves one line in trit_last_error() that names the file, option or device at fault (and
 * the outputs it was given are NULL, 0 or zeroed). A NULL handle or output pointer is
 * TRIT_ERROR_INVALID_ARGUMENT. No C++ exception ever leaves a function of this header.
 *
 * Memory: a handle is made by its _open/_create function and released by its _close/_free
 * function (NULL is accepted and ignored). Strings and arrays returned through `char**` and
 * `int32_t**` are the caller's, freed with trit_string_free and trit_tokens_free. Strings
 * inside structs that a handle fills belong to the handle: model info and adapter paths until
 * the model is closed; a generation result until the session's next generate or chat, or its
 * free; a training result until the trainer's next run, or its free. Strings passed in are
 * copied when the call needs them later.
 *
 * Threads: a model and everything made from it (its adapters, sessions and trainers) are used
 * from one thread at a time; different models may be used on different threads at once.
 * trit_session_cancel, trit_trainer_pause, trit_trainer_resume and trit_trainer_cancel may be
 * called from any thread while another thread is inside a call on the same handle (the handle
 * must not be freed meanwhile). Functions without a handle (the _default functions, the
 * tools, devices, versions, trit_last_error and the _free functions of caller-owned memory)
 * may be called from any thread. trit_last_error() is per thread. Callbacks run on the thread
 * that made the call, and must not call back into the handle that runs them, except for the
 * cancel, pause and resume functions.
 */
#ifndef TRIT_TRIT_H
#define TRIT_TRIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trit/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status, errors, memory, version ---- */

typedef enum trit_status {
  TRIT_OK = 0,
  TRIT_ERROR_INVALID_ARGUMENT = 1, /* a NULL argument, a bad option value, a request the model
                                      cannot serve (a prompt longer than the context, ...) */
  TRIT_ERROR_IO = 2,               /* a file missing, unreadable, malformed or not writable */
  TRIT_ERROR_DEVICE = 3,           /* the device cannot be opened, or failed while running */
  TRIT_ERROR_OUT_OF_MEMORY = 4,    /* host memory ran out */
  TRIT_ERROR_UNKNOWN = 5           /* anything else (a bug: please report the message) */
} trit_status;

/* The message of the last call on this thread that returned a trit_status other than TRIT_OK
 * ("" after one that returned TRIT_OK). Valid until the next call of this API on the thread. */
TRIT_API const char* trit_last_error(void);
/* "ok", "invalid argument", "i/o", "device", "out of memory", "unknown". */
TRIT_API const char* trit_status_name(trit_status status);
/* The library's version, "MAJOR.MINOR.PATCH" (trit/version.h holds the headers' version). */
TRIT_API const char* trit_version(void);

/* Frees a string this API returned through a `char**` (NULL is ignored). */
TRIT_API void trit_string_free(char* text);
/* Frees a token array this API returned through an `int32_t**` (NULL is ignored). */
TRIT_API void trit_tokens_free(int32_t* tokens);

/* A message for people (a warning about a file, ...). */
typedef void (*trit_message_callback)(const char* message, void* user);

/* ---- models ---- */

typedef struct trit_model trit_model;
typedef struct trit_adapter trit_adapter;

typedef struct trit_model_options {
  /* NULL, "" or "auto": the first Vulkan GPU when one works, else the CPU; "cpu"; "vulkan": the
   * first Vulkan device of any kind; "vulkan:N": device N of trit_list_devices(). */
  const char* device;
  int32_t threads;       /* CPU threads; 0: every core */
  int64_t max_buffer_mb; /* Vulkan: the largest buffer binding in MiB; 0: the device's own */
  bool act_quant;        /* int8 activations (W1.58A8, default); false: float activations */
  trit_message_callback on_warning; /* NULL: warnings are dropped */
  void* user;                       /* passed to on_warning */
  /* "relu2" or "silu" instead of the activation the file states or trit decides from it;
   * NULL or "": the file's */
  const char* activation;
  /* A memory budget in MiB, kept on the CPU (0: none): below the model's size its weights
   * stream from the file a block at a time; a budget too small to run is refused. */
  int64_t mem_budget_mb;
  /* The KV caches' elements: NULL, "" or "f32"; "f16" halves their memory (attention reads
   * values rounded to half). */
  const char* cache_type;
} trit_model_options;

/* device NULL, threads 0, max_buffer_mb 0, act_quant true, no callback, no memory budget, f32
 * caches. */
TRIT_API trit_model_options trit_model_options_default(void);
/* Opens a GGUF model on a device (options NULL: the defaults). TRIT_ERROR_IO: the file;
 * TRIT_ERROR_DEVICE: the device; TRIT_ERROR_INVALID_ARGUMENT: an option. */
TRIT_API trit_status trit_model_open(const char* path, const trit_model_options* options,
                                     trit_model** model);
/* Closes the model and frees its adapters. Its sessions and trainers must be freed first. */
TRIT_API void trit_model_close(trit_model* model);

typedef struct trit_model_info {
  const char* path;
  const char* arch;       /* "bitnet", "bitnet-b1.58" or "llama" */
  const char* activation; /* "relu2" or "silu" */
  int64_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv;
  int64_t n_ctx_train; /* the context the model was trained with */
  bool tied_head;      /* the LM head is the token embedding */
  bool has_tokenizer;
  bool has_embedded_adapter;     /* `trit merge --mode attach` stored one; it always applies */
  const char* chat_template;     /* the template's name ("bitnet", "chatml", ...) or "" */
  int32_t bos, eos;              /* the tokenizer's; -1 when it has none */
  const char* device;            /* "cpu: avx2, 16 threads", "vulkan: NVIDIA H200 (...)" */
  const char* device_fallback;   /* why "auto" ended on the CPU, or "" */
  const char* family;            /* "bitnet" (sub-norms) or "llama" (a ternary Llama model) */
  const char* activation_source; /* why the activation is what it is */
} trit_model_info;

/* Fills *info; its strings belong to the model (valid until it is closed). */
TRIT_API trit_status trit_model_get_info(const trit_model* model, trit_model_info* info);

/* The text's tokens, with the model's bos token first when add_bos and its tokenizer wants one;
 * special-token text becomes the special token when parse_special. Free with
 * trit_tokens_free. TRIT_ERROR_INVALID_ARGUMENT when the model has no tokenizer. */
TRIT_API trit_status trit_model_tokenize(const trit_model* model, const char* text, bool add_bos,
                                         bool parse_special, int32_t** tokens, size_t* n_tokens);
/* The tokens' text (NUL-terminated; *length, when not NULL, gets its length). Free with
 * trit_string_free. A token out of range is TRIT_ERROR_INVALID_ARGUMENT. */
TRIT_API trit_status trit_model_detokenize(const trit_model* model, const int32_t* tokens,
                                           size_t n_tokens, char** text, size_t* length);

typedef struct trit_chat_message {
  const char* role; /* "system", "user" or "assistant" */
  const char* content;
} trit_chat_message;

/* The conversation as the chat template writes it, ending with the assistant's turn opened
 * when add_generation_prompt. template_name NULL or "": the model's; else a built-in one
 * (bitnet, chatml, llama3). Free with trit_string_free. */
TRIT_API trit_status trit_model_render_chat(const trit_model* model,
                                            const trit_chat_message* messages, size_t n_messages,
                                            bool add_generation_prompt, const char* template_name,
                                            char** text);

/* Loads a LoRA adapter (an adapter GGUF or a PEFT folder) for the model and uploads it to the
 * model's device. The adapter belongs to the model and is freed with it. */
TRIT_API trit_status trit_model_load_adapter(trit_model* model, const char* path,
                                             trit_adapter** adapter);
/* The adapter's path, and a summary ("15 layers (...), rank 8, alpha 16"); owned by the
 * adapter. "" for NULL. */
TRIT_API const char* trit_adapter_path(const trit_adapter* adapter);
TRIT_API const char* trit_adapter_summary(const trit_adapter* adapter);

/* An adapter applied to one call: y += scale * (alpha / rank) * B (A x). */
typedef struct trit_adapter_scale {
  const trit_adapter* adapter;
  float scale;
} trit_adapter_scale;

/* ---- sessions: generation ---- */

typedef struct trit_session trit_session;

typedef struct trit_session_options {
  int64_t n_ctx;   /* positions the session holds; 0: the model's, at most 4096 */
  int64_t n_batch; /* prompt tokens computed in one pass */
} trit_session_options;

/* n_ctx 0, n_batch 64. */
TRIT_API trit_session_options trit_session_options_default(void);
/* A session (one sequence's KV cache) on the model, which must outlive it (options NULL: the
 * defaults). */
TRIT_API trit_status trit_session_create(trit_model* model, const trit_session_options* options,
                                         trit_session** session);
TRIT_API void trit_session_free(trit_session* session);

/* Streaming: each new piece of text (whole UTF-8 characters; text[len] is NUL). Return 0 to
 * stop the generation (TRIT_STOP_CALLBACK), anything else to go on. */
typedef int (*trit_text_callback)(const char* text, size_t len, void* user);

/* A bias added to one token's logit before sampling (-INFINITY bans it). */
typedef struct trit_logit_bias {
  int32_t token;
  float bias;
} trit_logit_bias;

/* How the next token is chosen: the logit bias and the penalties (repetition, then frequency
 * and presence), then greedy at temperature <= 0, else top-k, top-p and min-p filtering and
 * temperature sampling. */
typedef struct trit_sampling_options {
  float temperature;                 /* 0.8; <= 0: greedy */
  int32_t top_k;                     /* 40; <= 0: off */
  float top_p;                       /* 0.95; >= 1: off */
  float min_p;                       /* 0.05; <= 0: off */
  float repeat_penalty;              /* 1: off */
  int32_t repeat_last_n;             /* 64: tokens looked back at for the penalties (< 0: all) */
  float frequency_penalty;           /* 0: off; a token seen c times loses c times this */
  float presence_penalty;            /* 0: off; a token seen at all loses this */
  const trit_logit_bias* logit_bias; /* NULL: none; a token outside the vocabulary is an error */
  size_t n_logit_bias;
  uint64_t seed;
} trit_sampling_options;

typedef struct trit_generate_options {
  int64_t max_tokens; /* 128; < 0: until an end-of-generation token or a full context */
  trit_sampling_options sampling;
  /* Generation ends where the text first contains one of these (not part of the result). */
  const char* const* stop;
  size_t n_stop;
  bool ignore_eos; /* keep generating past end-of-generation tokens */
  /* Adapters for this call, after the model's embedded one; a change between calls starts
   * the session's cache afresh. */
  const trit_adapter_scale* adapters;
  size_t n_adapters;
  trit_text_callback on_text; /* NULL: no streaming */
  void* user;                 /* passed to on_text */
  bool parse_special;         /* true: special-token text in the prompt is the special token */
  const char* chat_template;  /* trit_session_chat: a built-in template; NULL or "": the model's */
  /* -1: none; 0..20: each generated token's log-probability under the model (before the logit
   * bias, the penalties and the temperature) and this many of the likeliest tokens' */
  int32_t logprobs;
} trit_generate_options;

/* max_tokens 128, the sampling defaults above, no stop strings, adapters or callback,
 * parse_special true. */
TRIT_API trit_generate_options trit_generate_options_default(void);

typedef enum trit_stop_reason {
  TRIT_STOP_MAX_TOKENS = 0,        /* max_tokens generated */
  TRIT_STOP_END_OF_GENERATION = 1, /* the model ended its text */
  TRIT_STOP_STRING = 2,            /* a stop string appeared */
  TRIT_STOP_CALLBACK = 3,          /* on_text returned 0 */
  TRIT_STOP_CANCELLED = 4,         /* trit_session_cancel() */
  TRIT_STOP_CONTEXT_FULL = 5       /* the session's context is full */
} trit_stop_reason;
/* OpenAI's words: "length", "stop" or "cancelled". */
TRIT_API const char* trit_stop_reason_name(trit_stop_reason reason);

/* A token and its log-probability. */
typedef struct trit_token_logprob {
  int32_t token;
  float logprob;
} trit_token_logprob;

typedef struct trit_generate_result {
  const char* text; /* the generated text without a stop string; owned by the session */
  size_t text_len;
  const int32_t* tokens; /* the generated tokens; owned by the session */
  size_t n_tokens;
  trit_stop_reason stop_reason;
  int64_t n_prompt;    /* prompt tokens */
  int64_t n_cached;    /* of those, taken from the cache instead of computed */
  int64_t n_generated; /* an end-of-generation token that ended it included */
  double prompt_seconds, generate_seconds;
  /* options.logprobs >= 0: logprobs[i] is tokens[i]'s log-probability, and top[i * n_top + k]
   * the k-th likeliest token at that position (n_top = options.logprobs); else NULL and 0.
   * Owned by the session. */
  const float* logprobs;
  const trit_token_logprob* top;
  size_t n_top;
} trit_generate_result;

/* Continues the session's text with the prompt, then generates (options NULL: the defaults;
 * result may be NULL). A cancel or a callback that stops it is no error: TRIT_OK, and the
 * result says why it stopped. */
TRIT_API trit_status trit_session_generate(trit_session* session, const char* prompt,
                                           const trit_generate_options* options,
                                           trit_generate_result* result);
/* The assistant's reply to the conversation, rendered with the chat template. The cache is
 * reused for the turns the session already holds, so a growing chat computes only its new
 * turn. */
TRIT_API trit_status trit_session_chat(trit_session* session, const trit_chat_message* messages,
                                       size_t n_messages, const trit_generate_options* options,
                                       trit_generate_result* result);
/* From any thread: the running generate or chat ends at its next token with
 * TRIT_STOP_CANCELLED (one that has not started yet ends at once). */
TRIT_API void trit_session_cancel(trit_session* session);
/* Forgets every position. */
TRIT_API void trit_session_reset(trit_session* session);
/* Positions the cache holds, and can hold (0 for NULL). */
TRIT_API int64_t trit_session_n_past(const trit_session* session);
TRIT_API int64_t trit_session_n_ctx(const trit_session* session);

/* ---- training ---- */

typedef struct trit_trainer trit_trainer;

typedef enum trit_train_event {
  TRIT_TRAIN_MESSAGE = 0,    /* a line for people: the device, a warning, resuming */
  TRIT_TRAIN_STEP = 1,       /* an optimizer step: step, loss, lr, grad_norm, ... */
  TRIT_TRAIN_VALIDATION = 2, /* step, val_loss */
  TRIT_TRAIN_CHECKPOINT = 3  /* a checkpoint was written: checkpoint */
} trit_train_event;

typedef struct trit_train_progress {
  trit_train_event kind;
  int64_t step;        /* optimizer steps done */
  int64_t total_steps; /* of the run */
  double epoch;
  double loss, lr, grad_norm;
  double tokens_per_s;
  double peak_mib; /* peak resident memory of the process */
  double eta_s;    /* < 0: unknown */
  double elapsed_s;
  double val_loss;
  const char* checkpoint; /* TRIT_TRAIN_CHECKPOINT: its folder; else "" */
  /* The line `trit finetune` prints for this event:
   *   step 12/200 | loss 2.3456 | lr 1.00e-04 | 1234 tok/s | peak 512 MiB | ETA 3m12s */
  const char* line;
} trit_train_progress;

/* Called on the thread that runs trit_trainer_run; the strings live until it returns. */
typedef void (*trit_train_callback)(const trit_train_progress* progress, void* user);

/* The fields of `trit finetune` (DESIGN section 5). Strings: NULL or "" is the default. */
typedef struct trit_train_options {
  const char* data;   /* folder with train/valid/test.jsonl, or one .jsonl or .txt file */
  const char* output; /* the adapter GGUF to write */
  /* adapter */
  const char* targets;      /* "all" (default), or a list of q, k, v, o, gate, up, down, head */
  int64_t rank;             /* 8 */
  float alpha;              /* 16: scaling alpha / rank */
  bool rslora;              /* scaling alpha / sqrt(rank) */
  float dropout;            /* 0: on the LoRA branch input */
  const char* init_adapter; /* an adapter GGUF to train further instead of a fresh one */
  /* optimisation */
  double lr;                 /* 1e-4 */
  const char* schedule;      /* "constant" (default), "linear" or "cosine" */
  int64_t warmup;            /* 0 steps */
  double weight_decay;       /* 0 */
  double grad_clip;          /* 1: global norm; <= 0: no clipping */
  int64_t epochs;            /* 1 */
  int64_t steps;             /* 0; > 0: overrides epochs */
  int64_t ctx;               /* 512: longer examples are truncated */
  int64_t batch;             /* 4 sequences per step */
  int64_t grad_accum;        /* 1 */
  int64_t pack_tokens;       /* -1: sequences computed together, up to this many tokens a pass
                                (0: one a pass; -1: a GPU packs up to 4096, the CPU up to ctx) */
  bool mask_prompt;          /* loss on completions / assistant turns only */
  const char* chat_template; /* a built-in one instead of the model's */
  bool grad_checkpointing;   /* true: recompute each block in the backward pass */
  uint64_t seed;
  /* validation and checkpoints */
  int64_t val_every;          /* 50; 0: only at the start and the end */
  int64_t val_examples;       /* 0: all */
  int64_t save_every;         /* 0: only when stopped early */
  int64_t max_bad_steps;      /* 5: non-finite steps in a row before stopping; 0: never */
  const char* checkpoint_dir; /* default: <output without .gguf>.checkpoints */
  const char* resume;         /* "": a fresh run; "latest": the newest checkpoint; or a folder */
  /* progress */
  trit_train_callback on_progress; /* NULL: silent */
  void* user;                      /* passed to on_progress */
} trit_train_options;

/* The defaults of trit::TrainOptions (the values in the comments above). */
TRIT_API trit_train_options trit_train_options_default(void);
/* A trainer for the model, which must outlive it. Checks the options (an error names the
 * option: TRIT_ERROR_INVALID_ARGUMENT); files are read by trit_trainer_run. */
TRIT_API trit_status trit_trainer_create(trit_model* model, const trit_train_options* options,
                                         trit_trainer** trainer);
TRIT_API void trit_trainer_free(trit_trainer* trainer);

typedef struct trit_train_result {
  int64_t steps_done;
  bool stopped; /* cancelled before the end; a checkpoint was written */
  double last_loss;
  double last_val_loss; /* -1 without validation data */
  /* Owned by the trainer. */
  const char* adapter_path;
  const char* metrics_path;
  const char* plot_path;
  const char* last_checkpoint; /* "" when none was written */
} trit_train_result;

/* Trains to the end, or until trit_trainer_cancel; writes the adapter, metrics.jsonl and a
 * loss plot beside it (result may be NULL). A cancelled run is no error: TRIT_OK with
 * result->stopped set, resumable with the option resume. */
TRIT_API trit_status trit_trainer_run(trit_trainer* trainer, trit_train_result* result);
/* From any thread. pause holds the run after its current step until resume; cancel ends it
 * after its current step with a checkpoint (or before it starts). */
TRIT_API void trit_trainer_pause(trit_trainer* trainer);
TRIT_API void trit_trainer_resume(trit_trainer* trainer);
TRIT_API void trit_trainer_cancel(trit_trainer* trainer);

/* ---- evaluation ---- */

/* phase ("loss" or "exact match"), items done, items in all. */
typedef void (*trit_eval_callback)(const char* phase, int64_t done, int64_t total, void* user);

typedef struct trit_eval_options {
  int64_t ctx;               /* 512: longer examples are truncated, as in training */
  bool mask_prompt;          /* loss on completions / assistant turns only */
  const char* chat_template; /* a built-in one instead of the model's */
  bool exact_match;          /* true: score prompt/completion rows by greedy generation */
  int64_t max_new;           /* exact match: tokens generated at most; 0: the reference's + 8 */
  const trit_adapter_scale* adapters;
  size_t n_adapters;
  trit_eval_callback on_progress;   /* NULL: silent */
  trit_message_callback on_warning; /* rows dropped, ...; NULL: dropped */
  void* user;                       /* passed to both callbacks */
} trit_eval_options;

TRIT_API trit_eval_options trit_eval_options_default(void);

typedef struct trit_eval_result {
  char kind[16];      /* "text", "completions", "chat" or "plain text" */
  int64_t n_rows;     /* examples before rows without targets were dropped */
  int64_t n_examples; /* scored */
  int64_t n_targets;  /* target tokens */
  double loss;        /* mean -log p over the target tokens */
  double perplexity;  /* exp(loss) */
  bool has_exact_match;
  int64_t exact_scored, exact_matched;
  double exact_accuracy;
} trit_eval_result;

/* The loss of the model on a data file (.jsonl rows as fine-tuning reads them, or .txt) and,
 * for prompt/completion rows, exact match (options NULL: the defaults). */
TRIT_API trit_status trit_evaluate(trit_model* model, const char* data_file,
                                   const trit_eval_options* options, trit_eval_result* result);

/* ---- devices ---- */

typedef struct trit_device_info {
  const char* name;             /* "cpu", "vulkan:0", ...: what trit_model_options.device takes */
  const char* description;      /* the processor's model name, or the GPU's */
  const char* kind;             /* "cpu", or "discrete", "integrated", "virtual", ... */
  bool real_gpu;                /* a discrete or integrated GPU (what "auto" picks) */
  bool is_default;              /* what "auto" would open */
  uint64_t memory_bytes;        /* the largest device-local heap (Vulkan) */
  uint64_t binding_limit_bytes; /* the largest buffer binding trit uses (Vulkan) */
  const char* features;         /* "avx512-vnni"; "int8 dot product, ..." */
} trit_device_info;

/* The CPU first, then every Vulkan device. One allocation, its strings inside: free it with
 * trit_devices_free. */
TRIT_API trit_status trit_list_devices(trit_device_info** devices, size_t* n_devices);
TRIT_API void trit_devices_free(trit_device_info* devices);
/* What `trit devices` prints. Free with trit_string_free. */
TRIT_API trit_status trit_devices_report(char** text);

/* ---- tools ----
 * Each writes through a temporary file renamed into place (a failure leaves no partial
 * output) and, when summary is not NULL, returns a line for people ("wrote OUT: ...") to free
 * with trit_string_free. */

typedef struct trit_convert_options {
  const char* type;      /* models: tq1_0, tq2_0 (default), i2_s, f16; adapters: f32, f16 */
  const char* embd_type; /* models: f16 (default), bf16, f32, q8_0, q6_K */
  const char* base;      /* adapters: the base model GGUF to check the shapes against */
  trit_message_callback on_warning;
  void* user;
} trit_convert_options;

TRIT_API trit_convert_options trit_convert_options_default(void);
/* A Hugging Face BitNet folder to a model GGUF, or a PEFT adapter folder to an adapter GGUF. */
TRIT_API trit_status trit_convert(const char* source, const char* output,
                                  const trit_convert_options* options, char** summary);

/* Re-packs a model's ternary weights as type tq1_0, tq2_0 or i2_s. */
TRIT_API trit_status trit_quantize(const char* input, const char* output, const char* type,
                                   char** summary);

typedef struct trit_create_options {
  const char* preset;     /* tiny, 125m, 1b, 2b4t, 7b, 13b; or */
  const char* config;     /* a JSON file of hyperparameters */
  const char* type;       /* the linear layers: tq1_0, tq2_0 (default) or i2_s */
  const char* embd_type;  /* f16 (default), bf16, f32, q8_0 or q6_K */
  const char* activation; /* relu2 or silu; NULL: the preset's */
  bool untied;            /* a separate output.weight */
  uint64_t seed;          /* 42 */
  int64_t vocab, layers;  /* overrides when not 0 */
} trit_create_options;

TRIT_API trit_create_options trit_create_options_default(void);
/* A model with random ternary weights of a given shape (for tests and benchmarks). */
TRIT_API trit_status trit_create_model(const char* output, const trit_create_options* options,
                                       char** summary);

typedef struct trit_merge_options {
  const char* const* adapters; /* "A.gguf" or "A.gguf:SCALE" */
  size_t n_adapters;
  const char* mode; /* "float" (default): W + s B A as f16/f32; "attach": stored in the file */
  const char* type; /* float mode: f16 (default) or f32 */
  int32_t threads;  /* 0: every core */
} trit_merge_options;

TRIT_API trit_merge_options trit_merge_options_default(void);
/* Folds adapters into a model (or attaches them to it). */
TRIT_API trit_status trit_merge(const char* model, const char* output,
                                const trit_merge_options* options, char** summary);

/* An adapter GGUF to a PEFT adapter folder that Hugging Face peft loads. */
TRIT_API trit_status trit_export_peft(const char* adapter, const char* output_dir, char** summary);

/* What `trit info` prints about a GGUF file (every tensor when all_tensors; one JSON object
 * when json). Free with trit_string_free. */
TRIT_API trit_status trit_describe_file(const char* path, bool all_tensors, bool json, char** text);

#ifdef __cplusplus
}
#endif

#endif /* TRIT_TRIT_H */
