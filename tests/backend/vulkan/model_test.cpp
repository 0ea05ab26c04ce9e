// Whole random models through Session on the Vulkan backend against the CPU backend (TQ2_0,
// TQ1_0 and I2_S, relu2 and silu, BitNet and ternary Llama blocks, tied and untied heads, several
// embedding types, with and without LoRA adapters uploaded as the backend's tensors): prompt
// processing and decoding give the CPU's top-1 and logits within a bound, and the same logits at a
// small binding limit as unlimited. The models are small (2 layers, 256 wide, ffn 768, 1000 tokens)
// and the prompt short (41 tokens), so that a CPU Vulkan driver (lavapipe) runs each case in
// seconds. The limit, 64 KiB, splits their tensors: the embedding and head matrices come in 5
// (q8_0) to 16 (f32) pieces, a batch's ffn activations in 2 and its logits in segments of 16
// tokens. (A limit of 1 MiB, once checked too, splits no tensor of these models: that run was the
// unlimited one again.)
#include "model/model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "infer/session.h"
#include "support/adapters.h"
#include "support/batch.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "support/vulkan.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using namespace test;  // NOLINT: the shared test helpers

struct ModelCase {
  std::string name;
  DType type, embd;
  Activation act;
  bool tied, lora;
  std::string arch = "bitnet";
  int64_t n_embd = 256, n_ff = 768;  // other than multiples of 256: rows stored padded
  KvType kv = KvType::F32;           // the caches' elements (both backends)
};

void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << c.name;
}

// The prompt: 41 tokens, a whole batch of 32 and a partial one.
constexpr size_t kPrompt = 41;

class VulkanModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(VulkanModel, LogitsMatchCpuAtEveryLimit) {
  const ModelCase& c = GetParam();
  std::unique_ptr<Backend> vk;
  open_vulkan(0, &vk);
  if (!vk) return;
  test::TempDir dir;
  CreateOptions o = tiny_options(5);  // 256 wide, 4 query and 2 KV heads, ffn 768
  o.hp.n_layer = 2, o.hp.n_vocab = 1000, o.hp.act = c.act, o.hp.tied_head = c.tied;
  o.type = c.type, o.embd_type = c.embd, o.hp.arch = c.arch;
  o.hp.n_embd = c.n_embd, o.hp.n_ff = c.n_ff, o.hp.rope_dim = c.n_embd / o.hp.n_head;
  auto model = Model::load(create_model(dir, "m.gguf", o));
  const HParams& hp = model->hparams();
  const LoraAdapter adapter =
      random_adapter(hp, {.targets = "all,head", .rank = 4, .alpha = 8.0f, .seed = 6});
  std::vector<std::pair<const LoraAdapter*, float>> attached;
  if (c.lora) attached.emplace_back(&adapter, 1.0f);
  const int64_t V = hp.n_vocab;
  ThreadPool pool(n_threads());
  CpuBackend cpu(pool);
  // The adapter's branches on each backend.
  const AttachedLora cpu_lora = attach_lora(cpu, hp, attached);
  const AttachedLora vk_lora = attach_lora(*vk, hp, attached);
  for (bool act_quant : {false, true}) {
    // Float activations: only f32 rounding differs. W1.58A8: a last-bit difference in rms_norm,
    // attention or silu flips the int8 rounding of an activation now and then, which moves the
    // logits of these random models by up to ~1e-2 of their range (measured with 1-ulp noise).
    const double tol = act_quant ? 3e-2 : 1e-4;
    const std::string what = cat(c.name, act_quant ? " W1.58A8" : " float activations");
    const PromptAndSteps want =
        prompt_and_steps(*model, cpu, ForwardOptions{act_quant, &cpu_lora.set, c.kv}, kPrompt);
    PromptAndSteps got;
    try {
      got = prompt_and_steps(*model, *vk, ForwardOptions{act_quant, &vk_lora.set, c.kv}, kPrompt);
    } catch (const Error& e) {
      if (act_quant || !names_one_of(e.what(), kActWords)) throw;
      std::fprintf(stderr, "note: %s: the Vulkan backend refuses: %s\n", what.c_str(), e.what());
      continue;
    }
    expect_logits_close(want.prompt, got.prompt, V, tol, what + " prompt");
    expect_logits_close(want.steps, got.steps, V, tol, what + " decoding");
    // DESIGN section 6: the result with any limit equals the untiled result.
    for (uint64_t limit : {64 * KiB}) {
      std::unique_ptr<Backend> tiled;
      open_vulkan(limit, &tiled);
      if (!tiled) return;
      const AttachedLora tiled_lora = attach_lora(*tiled, hp, attached);
      const PromptAndSteps t = prompt_and_steps(
          *model, *tiled, ForwardOptions{act_quant, &tiled_lora.set, c.kv}, kPrompt);
      const std::string at =
          cat(what, " at binding limit ", limit_name(limit), " against unlimited");
      expect_match({"prompt logits", V, got.prompt}, t.prompt, 0, at);
      expect_match({"decoding logits", V, got.steps}, t.steps, 0, at);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    VulkanModels, VulkanModel,
    ::testing::Values(
        ModelCase{"tq2_0_relu2_f16", DType::TQ2_0, DType::F16, Activation::Relu2, true, false},
        // TQ1_0 kept in place on the device (decoding reads it; prompts read its T2 codes)
        ModelCase{"tq1_0_silu_f16", DType::TQ1_0, DType::F16, Activation::Silu, true, false},
        ModelCase{"llama_i2_s_q8_0_untied_lora", DType::I2_S, DType::Q8_0, Activation::Silu, false,
                  true, "llama"},
        ModelCase{"tq2_0_silu_f32_lora", DType::TQ2_0, DType::F32, Activation::Silu, true, true},
        ModelCase{"i2_s_relu2_bf16", DType::I2_S, DType::BF16, Activation::Relu2, true, false},
        // 1bitLLM 3B's proportions: I2_S rows of 384 (padded on the device), f16 rows of 864
        // (padded on the host)
        ModelCase{"odd_widths_i2_s_silu_lora", DType::I2_S, DType::F16, Activation::Silu, true,
                  true, "bitnet", 384, 864},
        // f16 KV caches on both backends
        ModelCase{"tq2_0_silu_f16_cache_lora", DType::TQ2_0, DType::F16, Activation::Silu, true,
                  true, "bitnet", 256, 768, KvType::F16}),
    [](const auto& info) { return info.param.name; });

// Several sequences in one pass (model_forward_batch, what the server's continuous batching
// runs): prompts split over passes and beside decoding rows, different adapters per row. Each
// sequence's logits on the Vulkan backend equal the CPU's, sequence by sequence, within the
// bounds of the test above; at a small binding limit (rows of a sequence then start inside a
// piece and off the buffer-offset alignment) and with the caches in one pool they equal the
// unlimited ones.
TEST(VulkanBatch, EverySequenceGetsTheCpuLogitsItGetsAlone) {
  std::unique_ptr<Backend> vk;
  open_vulkan(0, &vk);
  if (!vk) return;
  test::TempDir dir;
  CreateOptions o = tiny_options(5);
  o.hp.n_layer = 2, o.hp.n_vocab = 1000;
  auto model = Model::load(create_model(dir, "m.gguf", o));
  const HParams& hp = model->hparams();
  const LoraAdapter a1 =
      random_adapter(hp, {.targets = "all,head", .rank = 4, .alpha = 8.0f, .seed = 6});
  const LoraAdapter a2 = random_adapter(hp, {.targets = "q,v,down", .rank = 2, .seed = 7});
  const int64_t V = hp.n_vocab;
  ThreadPool pool(n_threads());
  CpuBackend cpu(pool);
  std::unique_ptr<Backend> tiled;
  open_vulkan(64 * KiB, &tiled);
  ASSERT_TRUE(tiled);
  struct Sets {
    AttachedLora a, b;
  };
  auto sets = [&](Backend& be) {
    return Sets{attach_lora(be, hp, {{&a1, 1.0f}}),
                attach_lora(be, hp, {{&a1, 0.5f}, {&a2, 2.0f}})};
  };
  const Sets on_cpu = sets(cpu), on_vk = sets(*vk), on_tiled = sets(*tiled);
  for (bool act_quant : {false, true}) {
    const double tol = act_quant ? 3e-2 : 1e-4;
    const auto want =
        separate_logits(*model, cpu, batch_sequences(&on_cpu.a.set, &on_cpu.b.set), act_quant, 16);
    const auto got = batched_logits(*model, *vk, batch_sequences(&on_vk.a.set, &on_vk.b.set),
                                    batch_schedule(), act_quant, 16);
    const auto small =
        batched_logits(*model, *tiled, batch_sequences(&on_tiled.a.set, &on_tiled.b.set),
                       batch_schedule(), act_quant, 16);
    // Caches in one pool: decoding rows of several sequences take one dispatch (pieces of the
    // pool at 64 KiB), with the bits of the sequences one by one.
    const auto pooled = batched_logits(*model, *vk, batch_sequences(&on_vk.a.set, &on_vk.b.set),
                                       batch_schedule(), act_quant, 16, true);
    const auto small_pooled =
        batched_logits(*model, *tiled, batch_sequences(&on_tiled.a.set, &on_tiled.b.set),
                       batch_schedule(), act_quant, 16, true);
    for (size_t s = 0; s < want.size(); ++s) {
      const std::string what = cat("sequence ", s, act_quant ? " W1.58A8" : " float activations");
      expect_logits_close(want[s], got[s], V, tol, what);
      expect_match({"logits", V, got[s]}, small[s], 0, what + " at 64 KiB against unlimited");
      expect_match({"logits", V, got[s]}, pooled[s], 0, what + " pooled against separate caches");
      expect_match({"logits", V, got[s]}, small_pooled[s], 0, what + " pooled at 64 KiB");
    }
  }
}

}  // namespace
}  // namespace trit::engine
