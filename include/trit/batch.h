// Many generation requests served together by one model (continuous batching), for servers:
// a fixed number of slots, each with its own KV cache, decoded in one pass per step (the
// weights are read once for every slot); a request joins at the next step and leaves when it
// ends. Requests carry their own adapters and scales; a prompt that continues what a free
// slot's cache holds (a chat's next turn) reuses it.
//
//   trit::BatchGenerator gen(model, {.n_slots = 8});
//   std::thread worker([&] { while (running) if (!gen.step()) gen.wait_for_work(100); });
//   gen.submit({model.tokenize(prompt), options, [](const trit::GenerateResult& r) {...}});
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "trit/export.h"
#include "trit/model.h"
#include "trit/session.h"

namespace trit {

struct BatchOptions {
  int64_t n_slots = 4;  // requests decoded together
  int64_t n_ctx = 0;    // positions each slot holds; 0: the model's, at most 4096
  // Prompt tokens a step computes beside the decoding rows; 0: 512 on a GPU (a prompt costs
  // little beside the weights' read), 64 on the CPU (where a long prompt would stall every
  // decoding stream).
  int64_t n_batch = 0;
};

struct BatchRequest {
  std::vector<int32_t> prompt;  // Model::tokenize's tokens (render_chat for a chat)
  // max_tokens, sampling, logprobs, stop, ignore_eos, adapters (after the model's embedded
  // one), on_logprob and on_text, which are called from the thread running step();
  // parse_special is not read.
  GenerateOptions options;
  // Called once when the request ends, from the thread running step() (or from cancel()'s
  // next step for a request still queued).
  std::function<void(const GenerateResult&)> on_done;
};

class TRIT_API BatchGenerator {
 public:
  // Uploads the slots' caches. The model must outlive the generator, and while it runs, the
  // model is used by step() alone (its tokenizer and chat template may be used from any
  // thread).
  explicit BatchGenerator(Model& model, const BatchOptions& options = {});
  BatchGenerator(BatchGenerator&&) noexcept;
  BatchGenerator& operator=(BatchGenerator&&) noexcept;
  ~BatchGenerator();

  // From any thread: queues a request and returns its id. Throws trit::Error for an empty
  // prompt, a token id outside the vocabulary, a prompt that does not fit a slot's context, or
  // an adapter of another model.
  uint64_t submit(BatchRequest request);
  // From any thread: the request ends at the next step with StopReason::Cancelled and its
  // slot is free. Unknown and finished ids are ignored.
  void cancel(uint64_t id);
  // On one thread: admits queued requests, computes one pass and streams its tokens; returns
  // false when there was nothing to do.
  bool step();
  // Blocks up to timeout_ms until there is work for step(); true when there is.
  bool wait_for_work(int64_t timeout_ms);

  struct Status {
    int64_t slots = 0, active = 0, queued = 0;
  };
  Status status() const;
  int64_t n_ctx() const;  // positions of each slot

  struct Impl;  // opaque

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trit
