// Hyperparameters of a ternary model: read from and written to GGUF metadata, and the presets
// `trit create` makes. Two families share one block (model/block.h):
//   - BitNet b1.58 (general.architecture "bitnet" or "bitnet-b1.58"): sub-norms before the
//     attention's output projection and the feed-forward's down projection; relu2 (2B4T) or
//     SiLU (1bitLLM);
//   - Llama-architecture ternary models ("llama" with ternary linear weights: Falcon3 1.58-bit,
//     Llama3-8B-1.58, Falcon-E, as bitnet.cpp and transformers run them): no sub-norms, SiLU.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "core/activation.h"
#include "core/tensor_names.h"

namespace trit::engine {

class GgufFile;
class GgufWriter;

enum class Family { BitNet, Llama };

// How a model's activation was decided: from the file, assumed from its other contents, or
// set by the user. `why` is one line for `trit info` and the load message.
struct ActivationSource {
  bool assumed = false;  // the file does not say
  std::string why;
};

struct HParams {
  std::string arch = "bitnet";  // general.architecture: "bitnet", "bitnet-b1.58" or "llama"
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t n_ctx_train = 2048;
  int64_t rope_dim = 0;  // rotated dimensions per head (= head_dim)
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  Activation act = Activation::Relu2;
  bool tied_head = true;  // no output.weight: the head is token_embd

  Family family() const { return arch == "llama" ? Family::Llama : Family::BitNet; }
  bool sub_norms() const { return family() == Family::BitNet; }
  int64_t head_dim() const { return n_embd / n_head; }
  int64_t n_embd_kv() const { return head_dim() * n_head_kv; }
  AttnShape attn_shape() const { return {n_head, n_head_kv, head_dim(), rope_dim, rope_theta}; }

  // Reads <arch>.* keys; vocab size falls back to the token list's or token_embd's length.
  // Throws trit::Error naming the file and key on missing or inconsistent values. The
  // activation: act_override when given; else <arch>.hidden_activation; else, for a bitnet
  // file, from its vocabulary (a SentencePiece one marks the 1bitLLM family, SiLU, as
  // llama.cpp computes those files; anything else the 2B4T layout, relu2); llama: SiLU.
  static HParams from_gguf(const GgufFile& file, std::optional<Activation> act_override = {},
                           ActivationSource* source = nullptr);
  void write_gguf(GgufWriter& out) const;  // general.architecture and the <arch>.* keys
  // Checks divisibility and ranges; `where` names the source in the message.
  void validate(std::string_view where) const;
};

// "BitNet b1.58" or "Llama-architecture ternary".
std::string_view family_name(Family f);

// Presets: tiny, 125m, 1b, 2b4t, 7b, 13b.
std::optional<HParams> hparams_preset(std::string_view name);
std::vector<std::string> hparams_preset_names();

// Shape (n_in, n_out) of a block's linear layer.
std::pair<int64_t, int64_t> block_linear_shape(const HParams& hp, std::string_view what);

}  // namespace trit::engine
