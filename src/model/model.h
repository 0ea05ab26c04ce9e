// A BitNet b1.58 model loaded from GGUF: hyperparameters, tokenizer and the weights of every
// block, checked against each other. Weights stay in the memory-mapped file whenever the
// compute kernels can use their layout in place.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/lora.h"
#include "core/weights.h"
#include "model/hparams.h"

namespace trit::engine {

class GgufFile;
class Tokenizer;

// Float (f32/f16/bf16) linear weights in a file mean one of two things, told apart by the
// metadata key trit.linear_weights (model/embedded_adapter.h):
//   - absent: BitNet weights to ternarise at load and run as ternary layers. Weights already
//     ternary (every non-zero of one magnitude: llama.cpp's converter, `trit convert --type
//     f16`, which write T * scale) keep their values, so such a file gives the logits of its
//     ternary conversion; others (float master weights) are ternarised by absmean (DESIGN
//     section 2; core/quant.h ternarize). A width that is not a multiple of 256 (1bitLLM's
//     3B: 3200, 8640), which no packed type of its file could hold, is packed into rows padded
//     with zero codes (TernaryMatrix::row_in);
//   - "merged": weights with LoRA adapters folded in (`trit merge`, tools/merge.h), used as the
//     float matrices they are (LinearWeight::f). Ternary layers of such a file stay ternary.
// Any other value is an error naming the file and the key.
class BlockStager;

struct BlockWeights {
  const float* attn_norm = nullptr;      // (n_embd)
  const float* attn_sub_norm = nullptr;  // (n_embd)
  const float* ffn_norm = nullptr;       // (n_embd)
  const float* ffn_sub_norm = nullptr;   // (n_ff)
  LinearWeight q, k, v, o, gate, up, down;
};

struct ModelWeights {
  FloatMatrix token_embd;  // (n_vocab, n_embd)
  FloatMatrix output;      // the LM head: token_embd when tied
  const float* output_norm = nullptr;
  std::vector<BlockWeights> blocks;
};

class Model {
 public:
  using Warn = std::function<void(const std::string&)>;
  // Opens and checks a model; warnings (e.g. an activation the file does not state) go to
  // warn. act_override replaces the file's activation (HParams::from_gguf).
  static std::unique_ptr<Model> load(const std::string& path, const Warn& warn = nullptr,
                                     std::optional<Activation> act_override = {});
  ~Model();

  const HParams& hparams() const { return hp_; }
  const ActivationSource& activation_source() const { return act_source_; }
  const ModelWeights& weights() const { return w_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }  // null when the file has none
  const std::string& path() const;

  // The LoRA adapter stored in the file by `trit merge --mode attach` (tools/merge.h), or null,
  // and its user scale. Whoever runs the model applies it first, before any adapter of its own
  // (infer/session.h does).
  const LoraAdapter* embedded_adapter() const { return embedded_.get(); }
  float embedded_adapter_scale() const { return embedded_scale_; }

  // Streaming, for a memory budget smaller than the weights: a pass calls read_ahead(next)
  // before a block computes (block `next` is read from the file meanwhile), takes the block's
  // weights with block(l) and calls block_out(l) after it. Block n_layer is the LM head. A
  // streamed block is read into one of two buffers (BlockStager) and its weights point there:
  // the CPU computes from them, a device uploads them (and drops its copy after the pass, by
  // those weights' addresses); the head is read through the mapping, its pages read ahead and
  // released after. No-ops unless streaming is on, except the release of the file pages a
  // device has copied. A pass may stream on its own (WeightUse::pass_streams) with the model's
  // streaming off: a fine-tune on the CPU does, since a step computes over many tokens per
  // block read.
  struct WeightUse {
    bool host = true;  // the backend computes in host memory (else it keeps a copy of its own)
    bool pass_streams = false;
    // An inference pass reads a streamed head in pieces of rows (head_piece), each into a
    // buffer, instead of through the mapping: units n_layer + i of read_ahead.
    bool head_pieces = false;
  };
  // A block's weights for one pass: held (its buffer not reused) until destroyed.
  class BlockRef {
   public:
    BlockRef(const BlockWeights& w, BlockStager* held, int64_t l) : w_(w), held_(held), l_(l) {}
    ~BlockRef();
    BlockRef(const BlockRef&) = delete;
    BlockRef& operator=(const BlockRef&) = delete;
    const BlockWeights& weights() const { return w_; }

   private:
    const BlockWeights& w_;
    BlockStager* held_;
    int64_t l_;
  };
  // A piece of the head's rows for one pass, held until destroyed: rows [row0, row0 +
  // weights().n_out) of the head.
  class HeadPiece {
   public:
    HeadPiece(const FloatMatrix& w, int64_t row0, BlockStager* held, int64_t unit)
        : w_(w), row0_(row0), held_(held), unit_(unit) {}
    ~HeadPiece();
    HeadPiece(const HeadPiece&) = delete;
    HeadPiece& operator=(const HeadPiece&) = delete;
    const FloatMatrix& weights() const { return w_; }
    int64_t row0() const { return row0_; }

   private:
    FloatMatrix w_;
    int64_t row0_;
    BlockStager* held_;
    int64_t unit_;
  };
  void read_ahead(int64_t l, WeightUse use) const;
  BlockRef block(int64_t l, WeightUse use) const;
  // The pieces the head is read in (0: whole, through the mapping) and piece i of them.
  int64_t head_pieces(WeightUse use) const;
  HeadPiece head_piece(int64_t i, WeightUse use) const;
  // use.host false: the backend keeps its own copy of the weights (a GPU), so the block's file
  // pages leave the host's resident set the first time, streaming or not.
  void block_out(int64_t l, WeightUse use) const;
  bool streaming() const { return streaming_; }
  // A memory budget in bytes (0: none). Streaming turns on when the budget is below what the
  // whole model needs resident; a budget below min_stream_bytes(head_in_pieces) is refused
  // (trit::Error naming the smallest that works). head_in_pieces: the runs will be inference
  // on the host (the head read a piece at a time); a fine-tune, a head adapter or a device
  // read the head whole and check min_stream_bytes() themselves.
  void set_mem_budget(uint64_t bytes, bool head_in_pieces = false);
  uint64_t mem_budget() const { return mem_budget_; }
  // The least any run of this model needs while streaming: the process itself, the weights
  // converted at load (they stay resident), and the largest pair of neighbouring blocks (one
  // computing, one read ahead; the head counts as a block). head_in_pieces (inference on the
  // host, where the stager reads the head in pieces): the stager's two buffers instead of the
  // pair, with what the smallest run holds beside them (run_memory of one position: the
  // vocabulary's tables, one token's logits); a longer context's cache comes on top.
  uint64_t min_stream_bytes(bool head_in_pieces = false) const;
  // What inference on the host with the head in pieces needs with a session of n_ctx positions
  // (passes of up to n_batch tokens): the stager's buffers and run_memory's parts, with a
  // measured allowance. A budget below min_stream_bytes() that takes the head in pieces is
  // checked against it when a session starts (Session).
  uint64_t piece_run_bytes(int64_t n_ctx, int64_t n_batch, bool kv_f16) const;
  // Under a budget below min_stream_bytes() (taken for inference on the host): fails when it
  // cannot hold piece_run_bytes of these positions, naming `what` (a session of N positions),
  // what it needs and `hint` (what needs less).
  void check_piece_budget(int64_t positions, int64_t n_batch, bool kv_f16, const std::string& what,
                          const std::string& hint) const;
  // Under a budget below min_stream_bytes(): fails naming `what`, which reads the head whole,
  // and what that needs.
  void check_head_whole_budget(const std::string& what) const;
  // What min_stream_bytes() counts, without streaming: every weight resident.
  uint64_t resident_run_bytes() const;
  // The bytes of the file one block (or the head, l = n_layer) reads in place.
  uint64_t block_bytes(int64_t l) const;

 private:
  Model() = default;
  const float* load_f32_vector(const std::string& name, int64_t n);
  LinearWeight load_linear(int64_t layer, const std::string& what);
  FloatMatrix load_float_matrix(const std::string& name, int64_t n_in, int64_t n_out);

  HParams hp_;
  ActivationSource act_source_;
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelWeights w_;
  std::vector<std::vector<uint8_t>> owned_;  // weights converted at load (TQ1_0, f16 norms, ...)
  bool merged_linears_ = false;              // trit.linear_weights = "merged"
  std::unique_ptr<LoraAdapter> embedded_;
  float embedded_scale_ = 1.0f;
  struct Span {
    const uint8_t* p = nullptr;
    uint64_t n = 0;
  };
  void find_spans();
  uint64_t owned_bytes() const;  // weights converted at load (they stay resident)
  std::vector<Span> spans_;      // per block, then the head: the mapped bytes each reads in place
  bool streaming_ = false;
  uint64_t mem_budget_ = 0;
  std::unique_ptr<std::atomic<bool>[]> dropped_;  // per span: released for a device copy
  bool stages(WeightUse use) const { return streaming_ || use.pass_streams; }
  std::unique_ptr<BlockStager> stager_;  // after file_ and w_, which it reads
};

}  // namespace trit::engine
