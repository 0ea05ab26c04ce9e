// A BitNet b1.58 model opened on a device, its tokenizer and chat template, and the LoRA
// adapters loaded for it.
//
// Threads: a Model and everything made from it (adapters, sessions, trainers) are used from
// one thread at a time; different Models may run on different threads at once. The methods
// that say so (Session::cancel, Trainer::pause, resume and cancel) may be called from any
// thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "trit/error.h"
#include "trit/export.h"

namespace trit {

struct ModelOptions {
  // "" or "auto": the first Vulkan GPU (integrated or discrete) when one works, else the CPU
  // (software Vulkan devices such as lavapipe are never picked); "cpu"; "vulkan": the first
  // Vulkan device of any kind; "vulkan:N": device N of list_devices().
  std::string device;
  int threads = 0;            // CPU threads; 0: every core
  int64_t max_buffer_mb = 0;  // Vulkan: the largest buffer binding in MiB; 0: the device's own
  // A memory budget in MiB (0: none): below what the whole model needs, the weights stream a
  // block at a time, on the CPU from the file (read ahead, dropped after use), on a GPU through
  // the device (each block uploaded for its pass, dropped after it; a fine-tune on a GPU streams
  // under any budget). A budget too small for any run is refused, naming the smallest that
  // works.
  int64_t mem_budget_mb = 0;
  // W1.58A8 (int8 activations), as BitNet b1.58 computes; false: float activations, as
  // llama.cpp computes, for comparison.
  bool act_quant = true;
  // The elements of the KV caches of sessions, batch generators and evaluations: "f32" (or "")
  // or "f16", which halves their memory (attention then reads values rounded to half).
  std::string cache_type;
  // The feed-forward's activation, "relu2" or "silu", instead of the one the file states or
  // trit decides from it (ModelInfo::activation_source says how); "": the file's.
  std::string activation;
  // Messages about the file worth a person's attention (an activation assumed because the
  // file does not say, ...). Default: dropped.
  std::function<void(const std::string& message)> on_warning;
};

// What a model is: its architecture and shape.
struct ModelInfo {
  std::string path;
  std::string arch;  // general.architecture: "bitnet", "bitnet-b1.58" or "llama"
  // "bitnet" (BitNet b1.58: sub-norms in every block) or "llama" (a Llama-architecture ternary
  // model: Falcon3 1.58-bit, Llama3-8B-1.58, Falcon-E)
  std::string family;
  std::string activation;         // "relu2" or "silu"
  std::string activation_source;  // why: "from bitnet.hidden_activation", ...
  int64_t n_vocab = 0, n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0;
  int64_t n_ctx_train = 0;  // the context the model was trained with
  bool tied_head = true;    // the LM head is the token embedding
  bool has_tokenizer = false;
  std::string chat_template;  // the template's name ("bitnet", "chatml", "llama3", ...) or ""
  bool has_embedded_adapter = false;  // `trit merge --mode attach` stored one; it always applies
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

class Model;

// A LoRA adapter (an adapter GGUF, or a PEFT folder) loaded for one model and uploaded to its
// device once. A handle: copies name the same adapter, which lives as long as its Model.
class TRIT_API Adapter {
 public:
  Adapter() = default;
  const std::string& path() const;
  // "15 layers (q, k, v, o, gate, up, down in 2 blocks; head), rank 8, alpha 16"
  std::string summary() const;
  bool valid() const { return impl_ != nullptr; }

  struct Impl;  // opaque

 private:
  friend class Model;
  friend struct ApiAccess;
  explicit Adapter(const Impl* impl) : impl_(impl) {}
  const Impl* impl_ = nullptr;
};

// An adapter applied to one call with a scale: y += scale * (alpha / rank) * B (A x).
struct AdapterScale {
  Adapter adapter;
  float scale = 1.0f;
};

// "A.gguf" or "A.gguf:SCALE", as the command line's --lora takes it (a tail after the last ':'
// that is not a number stays part of the path).
struct AdapterSpec {
  std::string path;
  float scale = 1.0f;
};
TRIT_API AdapterSpec parse_adapter_spec(const std::string& spec);

class TRIT_API Model {
 public:
  // Opens a GGUF model file and its device. Throws trit::Error naming the file and what is
  // wrong with it, or the device and why it cannot run.
  static Model open(const std::string& path, const ModelOptions& options = {});
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelInfo& info() const;
  // The device and how it computes: "cpu: avx512-vnni, 16 threads", "vulkan: NVIDIA H200 (...)".
  std::string device() const;
  // Why "auto" ended on the CPU ("" when it did not fall back).
  const std::string& device_fallback() const;

  // ---- tokenizer (each throws when the model has none) ----
  // add_bos: put the model's bos token first when its tokenizer wants one.
  std::vector<int32_t> tokenize(std::string_view text, bool add_bos = true,
                                bool parse_special = true) const;
  std::string detokenize(std::span<const int32_t> tokens) const;
  std::string token_text(int32_t token) const;  // the token's piece of text
  int32_t bos() const;                          // -1 when the vocabulary has none
  int32_t eos() const;
  bool is_end_of_generation(int32_t token) const;  // eos, eot and the like

  // The conversation as the chat template writes it, ending with the assistant's turn opened
  // when add_generation_prompt. template_name: a built-in one (bitnet, chatml, llama3) instead
  // of the model's.
  std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                          const std::string& template_name = "") const;

  // ---- adapters ----
  // Loads an adapter GGUF (llama.cpp's LoRA layout) or a PEFT folder, checks it against the
  // model (architecture, layer shapes) and uploads it. Throws naming the file.
  Adapter load_adapter(const std::string& path);

  // ---- scoring ----
  // The logits of every position of `tokens` ((n, n_vocab), row-major), from an empty context.
  std::vector<float> logits(std::span<const int32_t> tokens,
                            std::span<const AdapterScale> adapters = {});

  struct Impl;  // opaque

 private:
  friend struct ApiAccess;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace trit
