// Small random models (tools/create.h) and their logits through a Session on the CPU.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/select.h"
#include "core/lora.h"
#include "core/thread_pool.h"
#include "infer/session.h"
#include "model/model.h"
#include "support/adapters.h"
#include "support/files.h"
#include "tools/create.h"

namespace trit::engine::test {

// `trit create`'s tiny preset (256 wide, 768 ffn, 4 query and 2 KV heads, 2 blocks) with a seed
// and the type of its linear layers.
inline CreateOptions tiny_options(uint64_t seed, DType type = DType::TQ2_0) {
  CreateOptions o;
  o.hp = *hparams_preset("tiny");
  o.seed = seed;
  o.type = type;
  return o;
}

// Writes a random model of options o as dir/name and returns its path.
inline std::string create_model(const TempDir& dir, const std::string& name,
                                const CreateOptions& o) {
  const std::string path = dir.file(name);
  create_random_model(o, path);
  return path;
}

// How session_logits runs a model.
struct LogitsRun {
  bool act_quant = true;
  // Adapters with their user scales, attached as --lora attaches them; none: the model's
  // embedded adapter applies (if it has one).
  std::vector<std::pair<const LoraAdapter*, float>> lora = {};
  int threads = 2;
  int64_t n_ctx = 0;  // 0: the number of tokens
  int64_t n_batch = 64;
};

// The logits of every token of ids ((n, n_vocab), row-major), one Session on the CPU.
inline std::vector<float> session_logits(const Model& m, const std::vector<int32_t>& ids,
                                         const LogitsRun& run = {}) {
  ThreadPool pool(run.threads);
  const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
  const AttachedLora lora = attach_lora(*cpu, m.hparams(), run.lora);
  Session s(m, run.n_ctx > 0 ? run.n_ctx : int64_t(ids.size()), *cpu,
            ForwardOptions{run.act_quant, run.lora.empty() ? nullptr : &lora.set}, run.n_batch);
  std::vector<float> logits;
  s.eval(ids, logits, true);
  return logits;
}

// A prompt of n_prompt tokens (77 unless said) in batches of 32, then 6 tokens decoded one at a
// time, through a Session of 96 positions on a backend: the logits of every token.
struct PromptAndSteps {
  std::vector<float> prompt;  // (n_prompt, n_vocab)
  std::vector<float> steps;   // (6, n_vocab)
};
inline PromptAndSteps prompt_and_steps(const Model& m, Backend& b, const ForwardOptions& o,
                                       size_t n_prompt = 77) {
  const int64_t V = m.hparams().n_vocab;
  std::vector<int32_t> ids(n_prompt);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 131 + 7) % size_t(V));
  Session s(m, 96, b, o, 32);
  PromptAndSteps r;
  s.eval(ids, r.prompt, true);
  for (int32_t t : {5, 900, 17, 17, 333, 2}) {
    std::vector<float> l;
    s.eval({t}, l);
    r.steps.insert(r.steps.end(), l.begin(), l.end());
  }
  return r;
}

}  // namespace trit::engine::test
