// The HTTP server of `trit serve`: OpenAI's completion and chat endpoints (streamed as
// server-sent events), llama-server's tokenizer and adapter endpoints, over one model whose
// requests share its passes (trit::BatchGenerator). Requests wait in a bounded queue for one
// of --parallel slots; a client that goes away or a request past its timeout frees its slot.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trit/trit.hpp"

namespace trit::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;         // 0: any free port (bound_port() says which)
  std::string api_key;     // not empty: every endpoint but /health wants "Authorization: Bearer K"
  std::string model_name;  // the id /v1/models lists; "": the file's name
  BatchOptions batch;      // --parallel slots, -c context per slot
  int64_t max_queue = 64;  // requests waiting for a slot; more get 503
  int64_t max_body_bytes = int64_t(16) << 20;
  // A dataset uploaded with POST /v1/files streams to disk, up to this size.
  int64_t max_upload_bytes = int64_t(256) << 20;
  double timeout_seconds = 600;                      // per request, from its arrival
  std::function<void(const std::string& line)> log;  // one line per request; null: silent
  // Fine-tuning jobs (serve/jobs.h): their folder ("": no jobs endpoints), the folder under
  // which a job may name server-side data ("": uploads only), and the model they train on.
  std::string jobs_dir;
  std::string allow_paths;
  std::string model_path;
  ModelOptions model_options;
};

// An adapter the server applies: its handle, the path it was loaded from and its global scale.
struct ServedAdapter {
  Adapter adapter;
  std::string path;
  float scale = 1.0f;
};

class Server {
 public:
  // Checks the options (a host other than loopback needs an API key) and makes the slots. The
  // model must outlive the server and is used by its worker thread alone while it runs.
  Server(Model& model, std::vector<ServedAdapter> adapters, ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the address; throws naming it when it cannot. Returns the port.
  int bind();
  // Serves until stop(): blocks.
  void run();
  // From any thread (a signal handler's thread): refuses new requests, ends the running ones
  // (their streams close with a finish reason and [DONE]) and makes run() return.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trit::serve
