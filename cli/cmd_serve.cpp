// trit serve: the OpenAI-compatible HTTP server (serve/server.h) over the model of -m.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli/commands.h"
#include "cli/common.h"
#include "serve/server.h"

namespace trit::cli {
namespace {

// The server keeps a thread for every connection (slots + queue + 8). glibc gives threads up to
// eight malloc arenas a core, and each arena keeps the request buffers freed into it: under
// bench/serve_load.sh austen-tiny's server held 81 MiB resident, with an arena a core 39 MiB at
// the same request rate. Its mmap threshold also rises to the largest block freed (request
// bodies up to --max-body-mb), and the trim threshold to twice that: each arena then kept up to
// 3.4 MiB of freed bodies, and the resident floor moved by that step between seconds of
// bench/serve_load.sh. Fixed thresholds send bodies over 256 KiB to mmap and trim an arena's top
// past 1 MiB (the floor now moves ~1 MiB; a 1b model's request maps ~2 blocks a token). The
// MALLOC_*_ environment variables, when set, are the user's choice and stay.
void limit_malloc_arenas() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) {
    mallopt(M_ARENA_MAX, int(std::max(2u, std::thread::hardware_concurrency())));
  }
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 256 << 10);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, 1 << 20);
#endif
}

}  // namespace

void add_serve_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    serve::ServeOptions serve;
    int64_t parallel = 4;
    int64_t max_body_mb = 16;
    int64_t max_upload_mb = 256;
    bool quiet = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "Serve the model over an OpenAI-compatible HTTP API (loopback by default)");
  add_run_options(cmd, args->run);
  cmd->add_option("--host", args->serve.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", args->serve.port, "Port (0: any free one)")->capture_default_str();
  cmd->add_option("--api-key", args->serve.api_key,
                  "Requests must send 'Authorization: Bearer KEY' (needed off loopback)");
  cmd->add_option("-P,--parallel", args->parallel, "Requests decoded together (slots)")
      ->capture_default_str();
  cmd->add_option(
         "-b,--batch,--batch-size", args->serve.batch.n_batch,
         "Prompt tokens a step computes beside the decoding rows (llama-server's "
         "--batch-size): more starts prompts sooner, fewer keeps decoding streams even; 0: "
         "512 on a GPU, 64 on the CPU")
      ->capture_default_str();
  cmd->add_option("--queue", args->serve.max_queue,
                  "Requests that may wait for a slot; more get 503")
      ->capture_default_str();
  cmd->add_option("--timeout", args->serve.timeout_seconds, "Seconds a request may take")
      ->capture_default_str();
  cmd->add_option("--max-upload-mb", args->max_upload_mb,
                  "Largest dataset upload (POST /v1/files; streamed to disk)");
  cmd->add_option("--max-body-mb", args->max_body_mb, "Largest request body")
      ->capture_default_str();
  cmd->add_option("--alias", args->serve.model_name, "Model id in /v1/models (default: file name)");
  cmd->add_flag("--quiet", args->quiet, "Do not log requests");
  cmd->add_option("--jobs-dir", args->serve.jobs_dir,
                  "Folder of fine-tuning jobs and uploaded data (default: "
                  "$XDG_STATE_HOME/trit/jobs, or ~/.local/state/trit/jobs)");
  cmd->add_option("--allow-paths", args->serve.allow_paths,
                  "Fine-tuning jobs may name data under this folder of the server");
  cmd->callback([args] {
    Args& a = *args;
    if (a.parallel <= 0) fail("--parallel must be positive, got " + std::to_string(a.parallel));
    if (a.max_body_mb <= 0) fail("--max-body-mb must be positive");
    if (a.max_upload_mb <= 0) fail("--max-upload-mb must be positive");
    if (a.serve.max_queue < 0) fail("--queue must be 0 or more");
    if (!(a.serve.timeout_seconds > 0)) fail("--timeout must be positive");
    if (a.serve.port < 0 || a.serve.port > 65535) {
      fail("--port must be between 0 and 65535, got " + std::to_string(a.serve.port));
    }
    // The signals are taken by one thread (below), none of the server's.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not an exit
    limit_malloc_arenas();
    LoadedModel lm = load_model(a.run);
    std::vector<serve::ServedAdapter> adapters;
    for (size_t i = 0; i < lm.adapters.size(); ++i) {
      adapters.push_back(
          {lm.adapters[i].adapter, lm.adapters[i].adapter.path(), lm.adapters[i].scale});
    }
    a.serve.batch.n_slots = a.parallel;
    a.serve.batch.n_ctx = a.run.ctx;
    a.serve.max_body_bytes = a.max_body_mb << 20;
    a.serve.max_upload_bytes = a.max_upload_mb << 20;
    if (a.serve.jobs_dir.empty()) {
      const char* state = std::getenv("XDG_STATE_HOME");
      const char* home = std::getenv("HOME");
      a.serve.jobs_dir = state && *state ? std::string(state) + "/trit/jobs"
                         : home && *home ? std::string(home) + "/.local/state/trit/jobs"
                                         : std::string("trit-jobs");
    }
    a.serve.model_path = a.run.model;
    a.serve.model_options.device = a.run.device;
    a.serve.model_options.threads = a.run.threads;
    a.serve.model_options.max_buffer_mb = a.run.max_buffer_mb;
    a.serve.model_options.act_quant = a.run.act_quant != "none";
    a.serve.model_options.activation = a.run.activation;
    if (!a.quiet) {
      a.serve.log = [](const std::string& line) {
        std::fprintf(stderr, "trit serve: %s\n", line.c_str());
      };
    }
    auto server = std::make_unique<serve::Server>(lm.model, std::move(adapters), a.serve);
    const int port = server->bind();
    std::fprintf(stderr, "trit serve: %s on %s, %lld slots\n", lm.model.info().path.c_str(),
                 lm.model.device().c_str(), static_cast<long long>(a.parallel));
    std::fprintf(stderr, "trit serve: listening on http://%s:%d\n", a.serve.host.c_str(), port);
    std::fflush(stderr);
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&signals, &sig);
      std::fprintf(stderr, "trit serve: %s, stopping\n",
                   sig == SIGINT ? "interrupted" : "terminated");
      server->stop();
    });
    server->run();  // returns once the waiter has called stop()
    waiter.join();
    std::fprintf(stderr, "trit serve: stopped\n");
  });
}

}  // namespace trit::cli
