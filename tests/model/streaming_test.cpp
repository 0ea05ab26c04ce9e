// A memory budget below the model's size streams the weights (Model::set_mem_budget): the
// results do not change, bit for bit, in inference and in training, and after a pass the
// file's pages are out of the process's resident set (the mapping's Rss in /proc/self/smaps),
// where without streaming they stay. Budgets too small to run are refused, naming the smallest.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "infer/batch_generate.h"
#include "infer/session.h"
#include "support/files.h"
#include "support/models.h"
#include "support/vulkan.h"
#include "train/lora_init.h"
#include "train/trainable_model.h"

namespace trit::engine {
namespace {

// Resident bytes of the process's mappings of `path` (the Rss lines of /proc/self/smaps).
uint64_t mapped_rss(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  uint64_t kib = 0;
  while (std::getline(smaps, line)) {
    std::istringstream in(line);
    std::string first;
    in >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {  // a mapping's header
      inside = line.size() >= path.size() &&
               line.compare(line.size() - path.size(), path.size(), path) == 0;
    } else if (inside && first == "Rss:") {
      uint64_t v = 0;
      in >> v;
      kib += v;
    }
  }
  return kib << 10;
}

class Streaming : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions o = test::tiny_options(31, DType::TQ1_0);
    o.hp.n_layer = 12;
    o.hp.tied_head = false;
    path_ = test::create_model(dir_, "m.gguf", o);
  }
  test::TempDir dir_;
  std::string path_;
  const std::vector<int32_t> tokens_ = {256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108};
};

TEST_F(Streaming, InferenceGivesTheSameLogitsAndLeavesTheWeightsOut) {
  auto model = Model::load(path_);
  uint64_t blocks = 0, largest = 0;
  for (int64_t l = 0; l <= model->hparams().n_layer; ++l) {
    blocks += model->block_bytes(l);
    largest = std::max(largest, model->block_bytes(l));
  }
  ASSERT_GT(blocks, 6 * largest);
  const std::vector<float> plain = test::session_logits(*model, tokens_, {.n_ctx = 32});
  EXPECT_GE(mapped_rss(path_), blocks - 64 * 1024) << "a plain pass keeps its weights mapped";

  model->set_mem_budget(model->min_stream_bytes());
  ASSERT_TRUE(model->streaming());
  const std::vector<float> streamed = test::session_logits(*model, tokens_, {.n_ctx = 32});
  ASSERT_EQ(plain.size(), streamed.size());
  EXPECT_EQ(0, std::memcmp(plain.data(), streamed.data(), plain.size() * sizeof(float)));
  // Every block and the head handed back; at most a page at each end of a span stays.
  EXPECT_LE(mapped_rss(path_), largest + 16 * 4096) << "of " << blocks << " bytes of weights";
}

// A device keeps its own copy of the weights: after its first pass the file's pages leave the
// host's resident set, with or without a budget, and the next pass gives the same logits.
TEST_F(Streaming, ADeviceCopyLeavesTheFilePagesOut) {
  auto model = Model::load(path_);
  uint64_t largest = 0;
  for (int64_t l = 0; l <= model->hparams().n_layer; ++l) {
    largest = std::max(largest, model->block_bytes(l));
  }
  std::unique_ptr<Backend> vk;
  test::open_vulkan(0, &vk);
  if (!vk) return;
  Session s(*model, 32, *vk);
  std::vector<float> first, second;
  s.eval(tokens_, first, true);
  EXPECT_LE(mapped_rss(path_), largest + 16 * 4096);
  s.truncate(0);
  s.eval(tokens_, second, true);
  EXPECT_EQ(first, second);
}

// Under a budget a device uploads each block from the buffer it was read into (BlockStager)
// and drops it after the block's pass: a prompt and decoding steps give the logits of the
// resident run, bit for bit, and the file's pages of the blocks are never mapped in.
TEST_F(Streaming, ADeviceStreamsTheBlocksThroughBuffersWithTheSameLogits) {
  auto model = Model::load(path_);
  // A prompt, then decoding steps: every logit of both.
  auto run = [&](Backend& be) {
    Session s(*model, 32, be);
    std::vector<float> all, l;
    s.eval(tokens_, all, true);
    for (int32_t t : {5, 300, 17, 17}) {
      s.eval({t}, l);
      all.insert(all.end(), l.begin(), l.end());
    }
    return all;
  };
  std::unique_ptr<Backend> vk;
  test::open_vulkan(0, &vk);
  if (!vk) return;
  const std::vector<float> resident = run(*vk);
  vk.reset();
  const uint64_t head = model->block_bytes(model->hparams().n_layer);
  model->set_mem_budget(model->min_stream_bytes());
  ASSERT_TRUE(model->streaming());
  test::open_vulkan(0, &vk);
  const std::vector<float> streamed = run(*vk);
  EXPECT_EQ(resident, streamed);
  EXPECT_LE(mapped_rss(path_), head + 16 * 4096) << "block pages mapped in";
}

// A device uploads an embedding table a piece at a time and gives each piece's file pages back
// once copied: right after the first lookup (before the pass would hand back the head's span)
// the table is out of the host's resident set, and the rows looked up are the CPU's.
TEST(DeviceUpload, TheEmbeddingTableLeavesTheHostAPieceAtATime) {
  test::TempDir dir;
  CreateOptions o = test::tiny_options(32);
  o.hp.n_vocab = 40000;  // a 128-wide f16 table of 9.8 MiB: several upload pieces
  const std::string path = test::create_model(dir, "big-vocab.gguf", o);
  auto model = Model::load(path);
  const FloatMatrix& table = model->weights().token_embd;
  ASSERT_NE(table.pages, nullptr);
  const uint64_t table_bytes = uint64_t(row_bytes(table.type, table.n_in)) * table.n_out;
  ASSERT_GT(table_bytes, 9u << 20);
  std::unique_ptr<Backend> vk;
  test::open_vulkan(0, &vk);
  if (!vk) return;
  const std::vector<int32_t> ids = {0, 39999, 17, 20000};
  auto out = vk->tensor("x", int64_t(ids.size()), table.n_in);
  vk->embedding(*out, table, ids.data(), int64_t(ids.size()));
  std::vector<float> got(ids.size() * size_t(table.n_in));
  vk->read(*out, 0, int64_t(ids.size()), got.data());
  EXPECT_LT(mapped_rss(path), table_bytes / 4) << "of a table of " << table_bytes << " bytes";
  ThreadPool pool(1);
  CpuBackend cpu_backend(pool);
  Backend& cpu = cpu_backend;
  auto want_t = cpu.tensor("x", int64_t(ids.size()), table.n_in);
  cpu.embedding(*want_t, table, ids.data(), int64_t(ids.size()));
  std::vector<float> want(got.size());
  cpu.read(*want_t, 0, int64_t(ids.size()), want.data());
  EXPECT_EQ(got, want);
}

// A fine-tune on the CPU streams its weights whatever the budget (TrainPassOptions::
// stream_weights; this small model only when told to stream whatever that saves): the same
// loss and gradients, bit for bit, as passes that keep every block resident and as a budget's
// streaming, and after the pass the file's pages are out.
TEST_F(Streaming, TrainingGivesTheSameLossAndGradients) {
  enum class Mode { Resident, PassStreams, Budget };
  auto run = [&](Mode mode) {
    auto model = Model::load(path_);
    uint64_t blocks = 0, largest = 0;
    for (int64_t l = 0; l <= model->hparams().n_layer; ++l) {
      blocks += model->block_bytes(l);
      largest = std::max(largest, model->block_bytes(l));
    }
    // A small adapter (rank 1 on three layers: 196 KB with its training state) in a budget
    // that streams.
    if (mode == Mode::Budget) model->set_mem_budget(model->min_stream_bytes() + (512 << 10));
    EXPECT_EQ(model->streaming(), mode == Mode::Budget);
    LoraAdapter adapter = lora_init(model->hparams(), "q,v,down", 1, 8.0f, false, 5);
    for (auto& [name, L] : adapter.layers) {
      for (size_t i = 0; i < L.b.size(); ++i) L.b[i] = 0.01f * float(int(i % 7) - 3);
    }
    ThreadPool pool(2);
    TrainPassOptions opts;
    opts.stream_weights = mode != Mode::Resident;
    opts.stream_min_saving = 0;
    TrainableModel tm(*model, adapter, pool, opts);
    std::vector<int32_t> targets(tokens_.begin() + 1, tokens_.end());
    targets.push_back(0);
    const std::vector<float> mask(tokens_.size(), 1.0f);
    tm.zero_grads();
    const double loss = tm.forward_backward(tokens_.data(), targets.data(), mask.data(),
                                            int64_t(tokens_.size()), float(tokens_.size()), 7);
    if (mode == Mode::Resident) {
      EXPECT_GE(mapped_rss(path_), blocks - 64 * 1024) << "resident passes keep their weights";
    } else {
      EXPECT_LE(mapped_rss(path_), largest + 16 * 4096) << "of " << blocks << " bytes of weights";
    }
    std::vector<float> grads;
    for (const auto& [name, g] : tm.grads()) {
      grads.insert(grads.end(), g.da.begin(), g.da.end());
      grads.insert(grads.end(), g.db.begin(), g.db.end());
    }
    return std::pair{loss, grads};
  };
  const auto [loss, grads] = run(Mode::Resident);
  for (Mode mode : {Mode::PassStreams, Mode::Budget}) {
    const auto [sloss, sgrads] = run(mode);
    EXPECT_EQ(loss, sloss);
    ASSERT_EQ(grads.size(), sgrads.size());
    EXPECT_EQ(0, std::memcmp(grads.data(), sgrads.data(), grads.size() * sizeof(float)));
  }
}

TEST_F(Streaming, BudgetsTooSmallAreRefusedWithTheSmallestThatWorks) {
  auto model = Model::load(path_);
  const uint64_t least = model->min_stream_bytes();
  try {
    model->set_mem_budget(least - (1 << 20));
    FAIL() << "a budget below the least was taken";
  } catch (const Error& e) {
    const std::string want =
        "the smallest that works is " + std::to_string((least + (1 << 20) - 1) >> 20) + " MiB";
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
  EXPECT_FALSE(model->streaming());
  // A budget above what the whole model needs does not stream.
  model->set_mem_budget(model->resident_run_bytes());
  EXPECT_FALSE(model->streaming());
  // A fine-tune whose adapter state cannot fit: refused before any work, naming its size.
  model->set_mem_budget(least);
  LoraAdapter adapter = lora_init(model->hparams(), "all", 64, 8.0f, false, 5);
  ThreadPool pool(1);
  try {
    TrainableModel tm(*model, adapter, pool, TrainPassOptions{});
    FAIL() << "an adapter larger than the budget was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot hold this fine-tune"), std::string::npos)
        << e.what();
  }
  // One whose state fits but whose passes over 512 tokens do not: refused by check_budget
  // (the trainer calls it with its ctx before the first step), naming the smallest budget,
  // which then holds it. The activations are model/memory_estimate's.
  LoraAdapter small = lora_init(model->hparams(), "q,v", 2, 8.0f, false, 5);
  const uint64_t state = 16 * lora_parameters(model->hparams(), 2, "q,v");
  const uint64_t acts = finetune_memory(model->hparams(), 0, 512, 2, "all", true).activations;
  // Under a budget a fine-tune on the CPU streams the weights: two blocks at a time.
  const uint64_t need = model->min_stream_bytes() + state + acts;
  ASSERT_LT(model->min_stream_bytes(), model->resident_run_bytes());
  model->set_mem_budget(need - acts / 2);
  TrainableModel tm(*model, small, pool, TrainPassOptions{});  // the state alone fits
  try {
    tm.check_budget(512);
    FAIL() << "passes over 512 tokens were taken in a budget that cannot hold them";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("its passes over 512 tokens"), std::string::npos) << what;
    const std::string want =
        "smallest budget that could work is " + std::to_string((need + (1 << 20) - 1) >> 20);
    EXPECT_NE(what.find(want), std::string::npos) << what;
  }
  model->set_mem_budget(need);
  EXPECT_NO_THROW(tm.check_budget(512));
  EXPECT_TRUE(tm.streams_weights());
  // A budget that holds the whole fine-tune with every block resident keeps the weights (no
  // pages faulted in again each pass); a byte less streams them again.
  const uint64_t whole = model->resident_run_bytes() + state + acts;
  model->set_mem_budget(whole);
  tm.check_budget(512);
  EXPECT_FALSE(tm.streams_weights());
  model->set_mem_budget(whole - 1);
  tm.check_budget(512);
  EXPECT_TRUE(tm.streams_weights());
}

// Inference on the host reads the head a piece at a time, so its budget may be smaller than one
// that holds the head whole beside a block: a budget between the two runs inference with the
// resident run's logits, while a fine-tune and an adapter on the head, which read the head
// whole, are refused naming what they need.
TEST_F(Streaming, InferenceTakesABudgetTooSmallForTheWholeHead) {
  // A head (64,000 x 256 f16: 33 MB) far larger than the stager's buffers and the vocabulary's
  // tables.
  CreateOptions o = test::tiny_options(33, DType::TQ1_0);
  o.hp.n_layer = 4;
  o.hp.n_vocab = 64000;
  o.hp.tied_head = false;
  const std::string path = test::create_model(dir_, "big_head.gguf", o);
  auto model = Model::load(path);
  const uint64_t pieces = model->min_stream_bytes(true), whole = model->min_stream_bytes();
  ASSERT_LT(pieces + (4 << 20), whole) << "the test model's head must be larger than its pieces";
  const std::vector<float> plain = test::session_logits(*model, tokens_, {.n_ctx = 32});
  auto mib = [](uint64_t b) { return std::to_string((b + (1 << 20) - 1) >> 20) + " MiB"; };
  try {
    model->set_mem_budget(pieces - (1 << 20), true);
    FAIL() << "a budget below the least was taken";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the smallest that works is " + mib(pieces)), std::string::npos) << what;
    EXPECT_NE(what.find("pieces of the head"), std::string::npos) << what;
  }
  // The same budget where the head is read whole (a device's) is refused.
  EXPECT_THROW(model->set_mem_budget(pieces, false), Error);
  // It holds a session of one position; one of 32 is refused when it starts, naming its need.
  model->set_mem_budget(pieces, true);
  ASSERT_TRUE(model->streaming());
  const uint64_t session = model->piece_run_bytes(32, 32, false);
  ASSERT_LT(session, whole);
  try {
    test::session_logits(*model, tokens_, {.n_ctx = 32});
    FAIL() << "a session of 32 positions started in a budget for one";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot hold a session of 32 positions: it needs " + mib(session)),
              std::string::npos)
        << what;
  }
  model->set_mem_budget(session, true);
  const std::vector<float> streamed = test::session_logits(*model, tokens_, {.n_ctx = 32});
  {  // A server's slots: their caches together.
    ThreadPool pool(1);
    const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
    try {
      BatchGenerator g(*model, *cpu, nullptr, {.n_slots = 16, .n_ctx = 32});
      FAIL() << "16 slots of 32 positions were taken in a budget for one session";
    } catch (const Error& e) {
      const std::string what = e.what();
      const std::string need = mib(model->piece_run_bytes(16 * 32, 64 + 16, false));
      EXPECT_NE(what.find("cannot hold 16 slots of 32 positions"), std::string::npos) << what;
      EXPECT_NE(what.find("it needs " + need), std::string::npos) << what;
    }
  }
  ASSERT_EQ(plain.size(), streamed.size());
  EXPECT_EQ(0, std::memcmp(plain.data(), streamed.data(), plain.size() * sizeof(float)));

  const LoraAdapter head = lora_init(model->hparams(), "head", 2, 8.0f, false, 7);
  try {
    test::session_logits(*model, tokens_, {.lora = {{&head, 1.0f}}, .n_ctx = 32});
    FAIL() << "a head adapter ran in a budget that cannot hold the head";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("an adapter on the head reads the head whole"), std::string::npos) << what;
    EXPECT_NE(what.find("it needs " + mib(whole)), std::string::npos) << what;
  }
  ThreadPool pool(1);
  LoraAdapter small = lora_init(model->hparams(), "q,v", 2, 8.0f, false, 5);
  try {
    TrainableModel tm(*model, small, pool, TrainPassOptions{});
    tm.check_budget(16);
    FAIL() << "a fine-tune ran in a budget that cannot hold the head";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot hold this fine-tune"), std::string::npos)
        << e.what();
  }
  // With room for the head whole beside a block, the head adapter runs.
  model->set_mem_budget(whole, true);
  EXPECT_NO_THROW(test::session_logits(*model, tokens_, {.lora = {{&head, 1.0f}}, .n_ctx = 32}));
}

}  // namespace
}  // namespace trit::engine
