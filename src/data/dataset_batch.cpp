// Batches for the trainer: per-epoch shuffled order, right padding, and a resumable position
// (see dataset.h).
#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "data/dataset.h"

namespace trit::engine {

namespace {

// SplitMix64's finaliser: spreads (seed, epoch) over the whole seed space of the generator.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

Batch make_batch(const Dataset& data, std::span<const int64_t> indices, int64_t pad_to) {
  const auto n = int64_t(data.examples.size());
  int64_t longest = 0;
  for (int64_t i : indices) {
    if (i < 0 || i >= n) fail("make_batch: example ", i, " is out of range (", n, " examples)");
    longest = std::max(longest, int64_t(data.examples[size_t(i)].tokens.size()) - 1);
  }
  if (pad_to > 0 && longest > pad_to) {
    fail("make_batch: ", data.source, ": an example has ", longest + 1,
         " tokens, more than the batch length ", pad_to, " + 1");
  }
  Batch b;
  b.B = int64_t(indices.size());
  b.T = pad_to > 0 ? pad_to : std::max<int64_t>(longest, 1);
  const size_t BT = size_t(b.B * b.T);
  b.tokens.assign(BT, 0);
  b.targets.assign(BT, -1);
  b.mask.assign(BT, 0.0f);
  b.lengths.assign(size_t(b.B), 0);
  b.indices.assign(indices.begin(), indices.end());
  for (int64_t r = 0; r < b.B; ++r) {
    const Example& ex = data.examples[size_t(indices[size_t(r)])];
    const int64_t len = std::max<int64_t>(int64_t(ex.tokens.size()) - 1, 0);  // input positions
    b.lengths[size_t(r)] = int32_t(len);
    for (int64_t t = 0; t < len; ++t) {
      const size_t at = size_t(r * b.T + t);
      b.tokens[at] = ex.tokens[size_t(t)];
      if (ex.loss_mask[size_t(t + 1)]) {
        b.targets[at] = ex.tokens[size_t(t + 1)];
        b.mask[at] = 1.0f;
        ++b.n_targets;
      }
    }
  }
  return b;
}

std::vector<PackedRows> pack_rows(const Batch& b, int64_t max_tokens, int64_t share,
                                  int64_t n_shares) {
  std::vector<PackedRows> passes;
  for (int64_t r = 0; r < b.B; ++r) {
    const int64_t len = b.lengths[size_t(r)];
    if (len <= 0 || r % n_shares != share) continue;
    const bool fits =
        !passes.empty() && max_tokens > 0 && passes.back().tokens_total() + len <= max_tokens;
    if (!fits) {
      passes.emplace_back();
      passes.back().first_row = r;
    }
    PackedRows& p = passes.back();
    const auto from = ptrdiff_t(r * b.T), to = from + ptrdiff_t(len);
    p.tokens.insert(p.tokens.end(), b.tokens.begin() + from, b.tokens.begin() + to);
    p.targets.insert(p.targets.end(), b.targets.begin() + from, b.targets.begin() + to);
    p.mask.insert(p.mask.end(), b.mask.begin() + from, b.mask.begin() + to);
    p.lengths.push_back(len);
  }
  return passes;
}

std::vector<int64_t> BatchIterator::epoch_order(int64_t n, uint64_t seed, int64_t epoch,
                                                bool shuffle) {
  std::vector<int64_t> order(size_t(std::max<int64_t>(n, 0)));
  for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
  if (!shuffle) return order;
  // Fisher-Yates with the raw output of mt19937_64 (specified exactly by the standard, unlike
  // std::shuffle and the distributions); the modulo bias is below n / 2^64.
  std::mt19937_64 rng(mix64(seed ^ mix64(uint64_t(epoch))));
  for (size_t i = order.size(); i > 1; --i) {
    const size_t j = size_t(rng() % uint64_t(i));
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

BatchIterator::BatchIterator(const Dataset& data, int64_t batch, uint64_t seed, bool shuffle,
                             int64_t pad_to)
    : data_(&data), batch_(batch), seed_(seed), shuffle_(shuffle), pad_to_(pad_to) {
  if (batch < 1) fail("batches: the batch size must be at least 1, not ", batch);
  if (data.examples.empty()) fail("batches: ", data.source, ": the dataset has no examples");
  order_ = epoch_order(int64_t(data.examples.size()), seed_, epoch_, shuffle_);
}

int64_t BatchIterator::batches_per_epoch() const {
  const auto n = int64_t(data_->examples.size());
  return (n + batch_ - 1) / batch_;
}

Batch BatchIterator::next() {
  const auto n = int64_t(order_.size());
  if (index_ >= n) {
    ++epoch_;
    index_ = 0;
    order_ = epoch_order(n, seed_, epoch_, shuffle_);
  }
  const int64_t count = std::min(batch_, n - index_);
  const std::span<const int64_t> idx(order_.data() + index_, size_t(count));
  index_ += count;
  return make_batch(*data_, idx, pad_to_);
}

BatchState BatchIterator::state() const {
  BatchState s;
  s.seed = seed_;
  s.epoch = epoch_;
  s.index = index_;
  s.n_examples = int64_t(order_.size());
  s.batch = batch_;
  s.shuffle = shuffle_;
  return s;
}

void BatchIterator::restore(const BatchState& s) {
  const auto n = int64_t(order_.size());
  if (s.n_examples != n) {
    fail("resume: ", data_->source, " has ", n, " examples, the checkpoint's data had ",
         s.n_examples, " (the data or the options that shape it changed)");
  }
  if (s.batch != batch_) {
    fail("resume: the batch size is ", batch_, ", the checkpoint's was ", s.batch);
  }
  if (s.shuffle != shuffle_) fail("resume: the checkpoint's batches were shuffled differently");
  if (s.epoch < 0 || s.index < 0 || s.index > n) {
    fail("resume: the checkpoint's data position (epoch ", s.epoch, ", example ", s.index,
         ") is out of range");
  }
  seed_ = s.seed;
  epoch_ = s.epoch;
  index_ = s.index;
  order_ = epoch_order(n, seed_, epoch_, shuffle_);
}

void to_json(nlohmann::json& j, const BatchState& s) {
  j = nlohmann::json{{"seed", s.seed},   {"epoch", s.epoch},
                     {"index", s.index}, {"n_examples", s.n_examples},
                     {"batch", s.batch}, {"shuffle", s.shuffle}};
}

void from_json(const nlohmann::json& j, BatchState& s) {
  if (!j.is_object()) fail("data position: expected a JSON object, not ", j.type_name());
  auto field = [&](const char* key) -> const nlohmann::json& {
    const auto it = j.find(key);
    if (it == j.end()) fail("data position: '", key, "' is missing");
    return *it;
  };
  auto integer = [&](const char* key) {
    const nlohmann::json& v = field(key);
    if (!v.is_number_integer()) fail("data position: '", key, "' must be an integer");
    return v.get<int64_t>();
  };
  const nlohmann::json& seed = field("seed");
  if (!seed.is_number_unsigned() && !(seed.is_number_integer() && seed.get<int64_t>() >= 0)) {
    fail("data position: 'seed' must be a non-negative integer");
  }
  s.seed = seed.get<uint64_t>();
  s.epoch = integer("epoch");
  s.index = integer("index");
  s.n_examples = integer("n_examples");
  s.batch = integer("batch");
  if (s.epoch < 0) fail("data position: 'epoch' is ", s.epoch, ", not a count");
  if (s.n_examples < 0) fail("data position: 'n_examples' is ", s.n_examples, ", not a count");
  if (s.batch < 0) fail("data position: 'batch' is ", s.batch, ", not a count");
  if (s.index < 0 || s.index > s.n_examples) {
    fail("data position: 'index' is ", s.index, ", outside 0..", s.n_examples, " (n_examples)");
  }
  const nlohmann::json& shuffle = field("shuffle");
  if (!shuffle.is_boolean()) fail("data position: 'shuffle' must be true or false");
  s.shuffle = shuffle.get<bool>();
}

}  // namespace trit::engine
