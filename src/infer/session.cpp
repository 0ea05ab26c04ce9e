#include "infer/session.h"

#include <algorithm>

#include "backend/select.h"
#include "core/error.h"

namespace trit::engine {

Session::Session(const Model& model, int64_t n_ctx, Backend& backend, ForwardOptions opts,
                 int64_t n_batch)
    : model_(model), backend_(backend), opts_(opts) {
  init(n_ctx, n_batch);
}

Session::Session(const Model& model, int64_t n_ctx, ThreadPool& pool, ForwardOptions opts,
                 int64_t n_batch)
    : model_(model),
      owned_backend_(make_cpu_backend(pool)),
      backend_(*owned_backend_),
      opts_(opts) {
  init(n_ctx, n_batch);
}

Session::~Session() = default;

void Session::init(int64_t n_ctx, int64_t n_batch) {
  if (n_ctx <= 0) fail("session: context size must be positive, got ", n_ctx);
  if (!opts_.lora && model_.embedded_adapter()) {
    embedded_ = std::make_unique<DeviceAdapter>(*model_.embedded_adapter(), model_.hparams(),
                                                backend_, model_.path() + " (embedded adapter)");
    const std::pair<const DeviceAdapter*, float> one[] = {
        {embedded_.get(), model_.embedded_adapter_scale()}};
    embedded_set_ = lora_set(model_.hparams(), one);
    opts_.lora = &embedded_set_;
  }
  const int64_t pass_tokens = std::max<int64_t>(1, std::min(n_batch, n_ctx));
  // A budget too small for the head read whole (taken for inference on the host, the head in
  // pieces) must still hold this session's cache and tensors: refused before they exist.
  if (backend_.host_memory()) {
    model_.check_piece_budget(n_ctx, pass_tokens, opts_.kv_type == KvType::F16,
                              cat("a session of ", n_ctx, " positions"),
                              "a shorter context needs less");
  }
  cache_.init(backend_, model_.hparams(), n_ctx, opts_.kv_type);
  arena_.init(backend_, model_.hparams(), pass_tokens);
}

bool Session::eval(const std::vector<int32_t>& tokens, std::vector<float>& logits, bool all_logits,
                   const std::atomic<bool>* cancel) {
  const int64_t n = int64_t(tokens.size());
  const int64_t n_vocab = model_.hparams().n_vocab;
  if (n == 0) fail("session: no tokens to evaluate");
  if (n_past() + n > cache_.n_ctx) {
    fail("context is full: ", n_past(), " + ", n, " tokens exceed the context size of ",
         cache_.n_ctx);
  }
  for (int32_t id : tokens) {  // check all before the cache changes
    if (id < 0 || id >= n_vocab) {
      fail("token id ", id, " is out of range: the vocabulary has ", n_vocab, " tokens");
    }
  }
  logits.assign(static_cast<size_t>((all_logits ? n : 1) * n_vocab), 0.0f);
  for (int64_t start = 0; start < n; start += arena_.n_batch) {
    if (start > 0 && cancel && cancel->load()) {
      logits.clear();
      return false;
    }
    const int64_t len = std::min(arena_.n_batch, n - start);
    const bool last_chunk = start + len == n;
    float* out = nullptr;
    int64_t first = len;
    if (all_logits) {
      out = logits.data() + start * n_vocab;
      first = 0;
    } else if (last_chunk) {
      out = logits.data();
      first = len - 1;
    }
    model_forward(model_, tokens.data() + start, len, n_past(), cache_, arena_, backend_, opts_,
                  out, first);
    tokens_.insert(tokens_.end(), tokens.begin() + start, tokens.begin() + start + len);
  }
  return true;
}

void Session::truncate(int64_t n) {
  if (n < 0 || n > n_past())
    fail("session: cannot truncate to ", n, " of ", n_past(), " positions");
  tokens_.resize(size_t(n));
}

int64_t Session::reuse_prefix(const std::vector<int32_t>& tokens) {
  size_t n = 0;
  while (n < tokens_.size() && n + 1 < tokens.size() && tokens_[n] == tokens[n]) ++n;
  tokens_.resize(n);
  return int64_t(n);
}

}  // namespace trit::engine
