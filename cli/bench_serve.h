// trit bench --serve: aggregate generation throughput of `trit serve` with N clients streaming
// at once over real sockets on 127.0.0.1, and their time to first token; or the same load on
// another server.
#pragma once

#include <cstdint>
#include <vector>

#include "cli/common.h"

namespace trit::cli {

struct ServeBenchOptions {
  std::vector<int64_t> streams;  // one run per count: that many slots and clients
  int64_t n_prompt = 32;         // prompt tokens of each request
  int64_t n_gen = 64;            // tokens each request generates
  int64_t n_batch = 64;          // prompt tokens per step
  bool json = false;             // one JSON object per run on stdout
  // Another OpenAI-compatible server to measure instead (http://HOST:PORT, started with at
  // least as many parallel slots as the largest count), e.g. llama.cpp's llama-server.
  std::string url;
};

void run_serve_bench(LoadedModel& lm, const ServeBenchOptions& o);

}  // namespace trit::cli
