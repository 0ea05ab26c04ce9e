#include "infer/batch_generate.h"

#include <algorithm>

#include "core/clock.h"
#include "core/error.h"
#include "infer/sampler.h"
#include "infer/text_stream.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {

using Clock = std::chrono::steady_clock;

// A request from submit() to its end.
struct BatchGenerator::Active {
  uint64_t id = 0;
  BatchJob job;
  Sampler sampler;
  TextStream stream;
  std::vector<int32_t> history;  // for the repetition penalty
  std::vector<int32_t> pending;  // tokens to feed: the rest of the prompt, or the sampled one
  bool prompt_done = false;
  bool text_open = true;  // on_text has not asked to stop
  bool cancelled = false;
  BatchResult result;
  Clock::time_point submitted, admitted, first_token;

  explicit Active(BatchJob j)
      : job(std::move(j)),
        sampler(job.gen.sampler),
        stream(job.gen.stop),
        submitted(Clock::now()) {}
};

struct BatchGenerator::Slot {
  KvCache cache;
  std::vector<int32_t> tokens;  // what the cache holds
  std::vector<std::pair<const void*, float>> lora_key;
  uint64_t last_used = 0;
  std::unique_ptr<Active> active;
};

BatchGenerator::BatchGenerator(const Model& model, Backend& backend, const Tokenizer* tokenizer,
                               BatchLimits limits)
    : model_(model), backend_(backend), tokenizer_(tokenizer), limits_(limits) {
  if (limits_.n_slots <= 0)
    fail("batch: the number of slots must be positive, got ", limits_.n_slots);
  if (limits_.n_ctx <= 0) fail("batch: the context must be positive, got ", limits_.n_ctx);
  if (limits_.n_batch <= 0) fail("batch: n_batch must be positive, got ", limits_.n_batch);
  // Under a budget taken for inference on the host (the head in pieces), every slot's cache.
  if (backend_.host_memory()) {
    model_.check_piece_budget(limits_.n_ctx * limits_.n_slots, limits_.n_batch + limits_.n_slots,
                              limits_.kv_type == KvType::F16,
                              cat(limits_.n_slots, " slots of ", limits_.n_ctx, " positions"),
                              "fewer slots or a shorter context need less");
  }
  arena_.init(backend_, model_.hparams(), limits_.n_batch + limits_.n_slots);
  // The slots' caches share tensors: a device attends for every slot of a step in one dispatch.
  std::vector<KvCache> caches =
      KvCache::pool(backend_, model_.hparams(), limits_.n_ctx, limits_.n_slots, limits_.kv_type);
  for (KvCache& c : caches) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->cache = std::move(c);
  }
}

BatchGenerator::~BatchGenerator() = default;

uint64_t BatchGenerator::submit(BatchJob job) {
  if (job.prompt.empty()) fail("the prompt is empty");
  if (int64_t(job.prompt.size()) >= limits_.n_ctx) {
    fail("the prompt (", job.prompt.size(), " tokens) does not fit the context of ", limits_.n_ctx,
         " tokens (one more is needed to generate)");
  }
  const int64_t n_vocab = model_.hparams().n_vocab;
  for (int32_t t : job.prompt) {
    if (t < 0 || t >= n_vocab) {
      fail("token id ", t, " is out of range: the vocabulary has ", n_vocab, " tokens");
    }
  }
  auto a = std::make_unique<Active>(std::move(job));
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    id = a->id = next_id_++;
    queue_.push_back(std::move(a));
  }
  work_.notify_all();
  return id;
}

void BatchGenerator::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_.push_back(id);
  }
  work_.notify_all();
}

bool BatchGenerator::wait_for_work(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return work_.wait_for(lock, timeout,
                        [&] { return !queue_.empty() || !cancelled_.empty() || active_ > 0; });
}

BatchGenerator::Counts BatchGenerator::counts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {limits_.n_slots, active_, int64_t(queue_.size())};
}

void BatchGenerator::admit() {
  std::vector<std::unique_ptr<Active>> dropped;  // cancelled while queued
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (uint64_t id : cancelled_) {
      for (auto& s : slots_) {
        if (s->active && s->active->id == id) s->active->cancelled = true;
      }
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if ((*it)->id == id) {
          dropped.push_back(std::move(*it));
          queue_.erase(it);
          break;
        }
      }
    }
    cancelled_.clear();
    while (!queue_.empty()) {
      Active& a = *queue_.front();
      // The free slot whose cache shares the longest prefix with the prompt (same adapters),
      // else the least recently used one.
      Slot* best = nullptr;
      size_t best_prefix = 0;
      for (auto& s : slots_) {
        if (s->active) continue;
        size_t n = 0;
        if (s->lora_key == a.job.lora_key) {
          while (n < s->tokens.size() && n + 1 < a.job.prompt.size() &&
                 s->tokens[n] == a.job.prompt[n]) {
            ++n;
          }
        }
        if (!best || n > best_prefix || (n == best_prefix && s->last_used < best->last_used)) {
          best = s.get();
          best_prefix = n;
        }
      }
      if (!best) break;
      best->active = std::move(queue_.front());
      queue_.pop_front();
      ++active_;
      Active& act = *best->active;
      best->tokens.resize(best_prefix);
      best->lora_key = act.job.lora_key;
      act.pending.assign(act.job.prompt.begin() + int64_t(best_prefix), act.job.prompt.end());
      act.history = act.job.prompt;
      act.admitted = Clock::now();
      act.result.n_cached = int64_t(best_prefix);
      act.result.queue_seconds =
          std::chrono::duration<double>(act.admitted - act.submitted).count();
      for (size_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].get() == best) act.result.slot = int64_t(i);
      }
      act.result.stats.n_prompt = int64_t(act.job.prompt.size());
    }
  }
  for (auto& a : dropped) {
    a->result.stats.stop_reason = StopReason::Cancelled;
    a->result.queue_seconds = seconds_since(a->submitted);
    if (a->job.on_done) a->job.on_done(a->result);
  }
}

void BatchGenerator::finish(Slot& slot, StopReason reason, const std::string& error) {
  std::unique_ptr<Active> a = std::move(slot.active);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --active_;
  }
  GenerateStats& st = a->result.stats;
  st.stop_reason = reason;
  a->result.error = error;
  if (tokenizer_) {
    const std::string tail = a->stream.finish();
    if (!tail.empty() && a->text_open && a->job.gen.on_text) a->job.gen.on_text(tail);
    st.text = a->stream.text();
  }
  const Clock::time_point now = Clock::now();
  if (!a->prompt_done) {
    st.prompt_seconds = std::chrono::duration<double>(now - a->admitted).count();
  } else {
    st.generate_seconds = std::chrono::duration<double>(now - a->first_token).count();
  }
  if (!error.empty()) slot.tokens.clear();  // the cache may hold a partial pass
  if (a->job.on_done) a->job.on_done(a->result);
}

bool BatchGenerator::take_token(Slot& slot, const float* logits) {
  Active& a = *slot.active;
  GenerateStats& st = a.result.stats;
  const GenerateOptions& g = a.job.gen;
  if (!a.prompt_done) {
    a.prompt_done = true;
    a.first_token = Clock::now();
    st.prompt_seconds = std::chrono::duration<double>(a.first_token - a.admitted).count();
  }
  if (g.n_predict >= 0 && st.n_generated >= g.n_predict) {
    finish(slot, StopReason::MaxTokens);
    return false;
  }
  const int32_t id = a.sampler.sample(logits, model_.hparams().n_vocab, a.history);
  ++st.n_generated;
  if (g.stop_at_end && tokenizer_ && tokenizer_->is_end_of_generation(id)) {
    finish(slot, StopReason::EndOfGeneration);
    return false;
  }
  a.history.push_back(id);
  st.tokens.push_back(id);
  if (g.n_logprobs >= 0) {
    st.logprobs.push_back(token_logprob(logits, model_.hparams().n_vocab, id, g.n_logprobs));
    if (g.on_logprob) g.on_logprob(st.logprobs.back());
  }
  if (g.on_token && !g.on_token(id)) {
    finish(slot, StopReason::Callback);
    return false;
  }
  if (tokenizer_) {
    const std::string piece = a.stream.push(tokenizer_->token_to_piece(id));
    if (!piece.empty() && g.on_text && !g.on_text(piece)) {
      a.text_open = false;
      finish(slot, StopReason::Callback);
      return false;
    }
    if (a.stream.stopped()) {
      finish(slot, StopReason::StopString);
      return false;
    }
  }
  if (g.n_predict >= 0 && st.n_generated >= g.n_predict) {
    finish(slot, StopReason::MaxTokens);
    return false;
  }
  if (int64_t(slot.tokens.size()) >= limits_.n_ctx) {
    finish(slot, StopReason::ContextFull);
    return false;
  }
  a.pending = {id};
  return true;
}

bool BatchGenerator::step() {
  admit();
  ++clock_;
  for (auto& s : slots_) {
    if (s->active && s->active->cancelled) finish(*s, StopReason::Cancelled);
  }
  // Rows: the decoding requests' next tokens first (grouped by adapters, so that their rows
  // share branches and head passes), then prompt chunks within n_batch.
  std::vector<Slot*> decoding, prompting;
  for (auto& s : slots_) {
    if (!s->active) continue;
    (s->active->prompt_done ? decoding : prompting).push_back(s.get());
  }
  std::stable_sort(decoding.begin(), decoding.end(),
                   [](const Slot* a, const Slot* b) { return a->lora_key < b->lora_key; });
  std::vector<int32_t> tokens;
  std::vector<BatchSeq> seqs;
  std::vector<Slot*> rows_of;  // the slot of each entry of seqs
  auto add = [&](Slot* s, int64_t n) {
    Active& a = *s->active;
    tokens.insert(tokens.end(), a.pending.begin(), a.pending.begin() + n);
    const bool last = n == int64_t(a.pending.size());
    seqs.push_back({&s->cache, n, int64_t(s->tokens.size()),
                    a.job.lora.empty() ? nullptr : &a.job.lora, last});
    rows_of.push_back(s);
  };
  for (Slot* s : decoding) add(s, 1);
  int64_t budget = limits_.n_batch;
  for (Slot* s : prompting) {
    if (budget <= 0) break;
    const int64_t n = std::min<int64_t>(budget, int64_t(s->active->pending.size()));
    add(s, n);
    budget -= n;
  }
  if (seqs.empty()) return false;
  int64_t wanted = 0;
  for (const BatchSeq& q : seqs) wanted += q.logits ? 1 : 0;
  const int64_t n_vocab = model_.hparams().n_vocab;
  std::vector<float>& logits = logits_;  // kept between steps: no 8 MB zeroed per step
  if (logits.size() < size_t(wanted * n_vocab)) logits.resize(size_t(wanted * n_vocab));
  try {
    model_forward_batch(model_, tokens.data(), seqs, arena_, backend_, limits_.act_quant,
                        logits.data());
  } catch (const std::exception& e) {
    for (Slot* s : rows_of) finish(*s, StopReason::Cancelled, e.what());
    return true;
  }
  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Slot& s = *rows_of[i];
    Active& a = *s.active;
    s.tokens.insert(s.tokens.end(), a.pending.begin(), a.pending.begin() + seqs[i].n);
    a.pending.erase(a.pending.begin(), a.pending.begin() + seqs[i].n);
    s.last_used = clock_;
    if (!seqs[i].logits) continue;
    take_token(s, logits.data() + row * n_vocab);
    ++row;
  }
  return true;
}

}  // namespace trit::engine
