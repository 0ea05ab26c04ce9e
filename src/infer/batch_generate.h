// Continuous batching: generation requests share the passes of one model. A fixed number of
// slots each hold one sequence's KV cache; a queued request takes a free slot at the next step
// (the one whose cached tokens share the longest prefix with its prompt, so that a chat that
// continues an earlier one is not computed again), and a finished or cancelled one leaves it.
// Every step is one model_forward_batch over the next token of every decoding request and a
// chunk of prompt tokens of the ones starting, each row with its request's adapters.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "infer/generate.h"
#include "model/forward.h"
#include "model/lora_set.h"

namespace trit::engine {

class Tokenizer;

// How a request ended, with GenerateStats' figures.
struct BatchResult {
  GenerateStats stats;       // tokens, text, stop reason; prompt_seconds from admission
  int64_t n_cached = 0;      // prompt tokens taken from the slot's cache
  double queue_seconds = 0;  // from submit() to a slot
  int64_t slot = -1;         // the slot that ran it
  std::string error;         // not empty: a pass failed (the message), stats up to there
};

struct BatchJob {
  std::vector<int32_t> prompt;  // the whole prompt (not empty)
  // n_predict, sampler, stop_at_end, stop, on_token, on_text (called from the stepping
  // thread); `cancel` is not read: use BatchGenerator::cancel.
  GenerateOptions gen;
  LoraSet lora;  // its adapters' branches (empty: none)
  // What identifies the adapters and scales: a slot's cache computed with another key is not
  // reused.
  std::vector<std::pair<const void*, float>> lora_key;
  std::function<void(const BatchResult&)> on_done;  // once, from the stepping thread
};

struct BatchLimits {
  int64_t n_slots = 4;   // requests decoded together
  int64_t n_ctx = 0;     // positions of each slot
  int64_t n_batch = 64;  // prompt tokens a step computes beside the decoding rows
  bool act_quant = true;
  KvType kv_type = KvType::F32;  // the elements of the slots' caches
};

class BatchGenerator {
 public:
  // The model, backend and tokenizer (may be null: no end-of-generation check, no text) must
  // outlive the generator.
  BatchGenerator(const Model& model, Backend& backend, const Tokenizer* tokenizer,
                 BatchLimits limits);
  ~BatchGenerator();

  // From any thread: queues a request and returns its id. Throws for an empty prompt or one
  // that does not fit a slot's context.
  uint64_t submit(BatchJob job);
  // From any thread: the request ends at the next step (StopReason::Cancelled) and frees its
  // slot; unknown or finished ids are ignored.
  void cancel(uint64_t id);
  // On one thread: admits queued requests, runs one pass and streams its tokens. Returns
  // false when there was nothing to do.
  bool step();
  // Blocks until a request is queued or cancelled, or the timeout passes; true when there is
  // work.
  bool wait_for_work(std::chrono::milliseconds timeout);

  struct Counts {
    int64_t slots = 0, active = 0, queued = 0;
  };
  Counts counts() const;
  const BatchLimits& limits() const { return limits_; }

 private:
  struct Active;
  struct Slot;
  void admit();  // queued requests into free slots
  void finish(Slot& slot, StopReason reason, const std::string& error = "");
  bool take_token(Slot& slot, const float* logits);  // false: the request ended

  const Model& model_;
  Backend& backend_;
  const Tokenizer* tokenizer_;
  BatchLimits limits_;
  ForwardArena arena_;
  std::vector<float> logits_;  // the logits of a step's wanted rows
  std::vector<std::unique_ptr<Slot>> slots_;
  uint64_t clock_ = 0;  // steps, for the least recently used free slot

  mutable std::mutex mutex_;  // guards what follows
  std::condition_variable work_;
  std::deque<std::unique_ptr<Active>> queue_;
  std::vector<uint64_t> cancelled_;
  uint64_t next_id_ = 1;
  int64_t active_ = 0;
};

}  // namespace trit::engine
