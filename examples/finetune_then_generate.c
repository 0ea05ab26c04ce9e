/* Fine-tunes a LoRA adapter with trit's C API, printing each step's line as it trains, then
 * generates with the adapter applied.
 *
 *   finetune_then_generate MODEL.gguf DATA ADAPTER.gguf [--device D] [--steps N] [--ctx N]
 *                          [--prompt TEXT]
 *
 * DATA is a folder with train.jsonl (and valid.jsonl) or one .jsonl file, as `trit finetune`
 * reads it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <trit/trit.h>

/* Prints the line `trit finetune` prints for each step, validation and message. */
static void on_progress(const trit_train_progress* p, void* user) {
  (void)user;
  if (p->kind != TRIT_TRAIN_CHECKPOINT) printf("%s\n", p->line);
  fflush(stdout);
}

/* Streams the generated text. */
static int on_text(const char* text, size_t len, void* user) {
  (void)user;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return 1; /* 0 would stop the generation */
}

static int fail(const char* what, trit_status status) {
  fprintf(stderr, "finetune_then_generate: %s: %s (%s)\n", what, trit_last_error(),
          trit_status_name(status));
  return 1;
}

int main(int argc, char** argv) {
  const char* device = NULL;
  const char* prompt = "Write the name surname first: Jane Bennet.\nAnswer:";
  long steps = 20, ctx = 48;
  const char* positional[3] = {NULL, NULL, NULL};
  int n_positional = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device = argv[++i];
    } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      steps = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--ctx") == 0 && i + 1 < argc) {
      ctx = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc) {
      prompt = argv[++i];
    } else if (argv[i][0] != '-' && n_positional < 3) {
      positional[n_positional++] = argv[i];
    } else {
      n_positional = 0;
      break;
    }
  }
  if (n_positional != 3) {
    fprintf(stderr,
            "usage: finetune_then_generate MODEL.gguf DATA ADAPTER.gguf [--device D] "
            "[--steps N] [--ctx N] [--prompt TEXT]\n");
    return 2;
  }
  const char* model_path = positional[0];
  const char* data = positional[1];
  const char* adapter_path = positional[2];

  trit_model_options mo = trit_model_options_default();
  mo.device = device;
  trit_model* model = NULL;
  trit_status st = trit_model_open(model_path, &mo, &model);
  if (st != TRIT_OK) return fail("open", st);
  trit_model_info info;
  trit_model_get_info(model, &info); /* cannot fail with a model and a struct */
  printf("trit %s; %s: %lld layers, embedding %lld, on %s\n", trit_version(), info.path,
         (long long)info.n_layer, (long long)info.n_embd, info.device);

  /* 1. Fine-tune: the options of `trit finetune`, as fields. */
  trit_train_options to = trit_train_options_default();
  to.data = data;
  to.output = adapter_path;
  to.steps = steps;
  to.ctx = ctx;
  to.batch = 8;
  to.lr = 3e-3;
  to.schedule = "cosine";
  to.warmup = steps / 10;
  to.mask_prompt = true;
  to.val_every = steps / 2 > 0 ? steps / 2 : 1;
  to.seed = 1;
  to.on_progress = on_progress;
  trit_trainer* trainer = NULL;
  st = trit_trainer_create(model, &to, &trainer);
  trit_train_result trained;
  if (st == TRIT_OK) st = trit_trainer_run(trainer, &trained);
  if (st != TRIT_OK) {
    const int rc = fail("finetune", st); /* before the next call replaces the message */
    trit_trainer_free(trainer);
    trit_model_close(model);
    return rc;
  }
  printf("trained %lld steps, loss %.4f; adapter %s\n", (long long)trained.steps_done,
         trained.last_loss, trained.adapter_path);
  trit_trainer_free(trainer); /* trained's strings belonged to it */

  /* 2. Generate with the adapter applied (scale 1), greedy, ending at the line's end. */
  trit_adapter* adapter = NULL;
  st = trit_model_load_adapter(model, adapter_path, &adapter);
  if (st != TRIT_OK) {
    const int rc = fail("load adapter", st);
    trit_model_close(model);
    return rc;
  }
  trit_session* session = NULL;
  st = trit_session_create(model, NULL, &session);
  if (st != TRIT_OK) {
    const int rc = fail("session", st);
    trit_model_close(model);
    return rc;
  }
  const trit_adapter_scale use = {adapter, 1.0f};
  const char* stop[] = {"\n"};
  trit_generate_options go = trit_generate_options_default();
  go.max_tokens = 16;
  go.sampling.temperature = 0.0f;
  go.stop = stop;
  go.n_stop = 1;
  go.adapters = &use;
  go.n_adapters = 1;
  go.on_text = on_text;
  printf("%s", prompt);
  trit_generate_result result;
  st = trit_session_generate(session, prompt, &go, &result);
  const int rc = st == TRIT_OK ? 0 : fail("generate", st);
  if (st == TRIT_OK) {
    printf("\n[%lld tokens, %s]\n", (long long)result.n_generated,
           trit_stop_reason_name(result.stop_reason));
  }
  trit_session_free(session);
  trit_model_close(model);
  return rc;
}
