// Several sequences in one pass (model_forward_batch): each sequence's logits equal those of the
// sequence run alone, with prompts split over passes, prompts beside decoding rows and
// different adapters per sequence.
#include <gtest/gtest.h>

#include "backend/select.h"
#include "core/error.h"
#include "model/forward.h"
#include "support/adapters.h"
#include "support/batch.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"

namespace trit::engine {
namespace {

TEST(BatchForward, EverySequenceGetsTheLogitsItGetsAlone) {
  test::TempDir dir;
  auto model = Model::load(test::create_model(dir, "m.gguf", test::tiny_options(5)));
  const HParams& hp = model->hparams();
  const LoraAdapter a1 = test::random_adapter(
      hp, {.targets = "all,head", .rank = 4, .alpha = 8.0f, .rslora = false, .seed = 3});
  const LoraAdapter a2 =
      test::random_adapter(hp, {.targets = "q,v,down", .rank = 2, .alpha = 4.0f, .seed = 4});
  ThreadPool pool(2);
  const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
  const test::AttachedLora la = test::attach_lora(*cpu, hp, {{&a1, 1.0f}});
  const test::AttachedLora lb = test::attach_lora(*cpu, hp, {{&a1, 0.5f}, {&a2, 2.0f}});
  const auto seqs = test::batch_sequences(&la.set, &lb.set);
  for (bool act_quant : {true, false}) {
    const auto alone = test::separate_logits(*model, *cpu, seqs, act_quant, 16);
    for (bool pooled : {false, true}) {
      const auto batched =
          test::batched_logits(*model, *cpu, seqs, test::batch_schedule(), act_quant, 16, pooled);
      ASSERT_EQ(batched.size(), alone.size());
      for (size_t s = 0; s < seqs.size(); ++s) {
        ASSERT_EQ(batched[s].size(), alone[s].size()) << "sequence " << s;
        // Rows are computed independently of each other: the same bits.
        EXPECT_EQ(batched[s], alone[s])
            << "sequence " << s << " act_quant " << act_quant << " pooled " << pooled;
      }
    }
    // The adapters matter: sequences 1 and 2 share theirs, 3 has others.
    EXPECT_GT(test::rel_l2(alone[1], test::separate_logits(
                                         *model, *cpu, {{seqs[1].prompt, seqs[1].decoded, nullptr}},
                                         act_quant, 16)[0]),
              1e-3);
  }
}

TEST(BatchForward, RefusesASequenceBeyondItsCacheAndAnOverfullBatch) {
  test::TempDir dir;
  auto model = Model::load(test::create_model(dir, "m.gguf", test::tiny_options(5)));
  ThreadPool pool(1);
  const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
  KvCache cache;
  cache.init(*cpu, model->hparams(), 4);
  ForwardArena arena;
  arena.init(*cpu, model->hparams(), 3);
  const int32_t tokens[4] = {1, 2, 3, 4};
  const BatchSeq beyond[] = {{&cache, 2, 3, nullptr, true}};
  EXPECT_NE(test::error_of([&] {
              model_forward_batch(*model, tokens, beyond, arena, *cpu, true, nullptr);
            }).find("exceed the context of 4"),
            std::string::npos);
  const BatchSeq overfull[] = {{&cache, 2, 0, nullptr, true}, {&cache, 2, 2, nullptr, true}};
  EXPECT_NE(test::error_of([&] {
              model_forward_batch(*model, tokens, overfull, arena, *cpu, true, nullptr);
            }).find("4 tokens for a batch of 3"),
            std::string::npos);
}

}  // namespace
}  // namespace trit::engine
