// Training data for fine-tuning (DESIGN section 3, "Datasets"), with mlx-lm's conventions.
//
// Sources (load_dataset):
//   - a folder holding train.jsonl, and valid.jsonl and test.jsonl when present (a folder
//     without valid.jsonl loads, with a warning: no validation loss then);
//   - one .jsonl file: the training split, no validation or test split;
//   - one .txt file: plain text for language modelling. The whole file is tokenised once (bos
//     first when the tokenizer adds one, eos last with add_eos) and cut into windows of
//     ctx + 1 tokens that overlap by one token, so every token but the first is a target
//     exactly once; the last window may be shorter.
//
// JSONL rows, one JSON object a line (blank lines skipped; other keys such as "id" ignored;
// one file holds one kind of row):
//   {"text": T}                   tokens = [bos] T [eos]; every token after the first is a
//                                  target. Prompt masking is an error here, as in mlx-lm.
//   {"prompt": P, "completion": C} tokens = [bos] tokenise(P + C) [eos], the strings joined
//                                  as they are (put any separator in the data). With
//                                  mask_prompt only the tokens after those of P alone are
//                                  targets (and eos). mlx-lm instead renders the pair as a
//                                  user and an assistant turn of the chat template:
//                                  completions_as_chat = true does that.
//   {"messages": [{"role": R, "content": S}, ...]}
//                                  rendered with the chat template (R one of system, user,
//                                  assistant, tool), tokenised with bos when the tokenizer adds
//                                  one; no eos added (the template ends each turn). With
//                                  mask_prompt the targets are the assistant turns only: from
//                                  the first token after the assistant header to the turn's
//                                  end-of-turn token (<|eot_id|>, <|im_end|>, ...) inclusive.
// Bos is added when the tokenizer adds one by default; eos is appended to text and completion
// rows when add_eos is set, the tokenizer has one and the row does not already end with it.
// Text is tokenised with special tokens parsed ("<|eot_id|>" in the data is that token), as
// Hugging Face tokenizers (and so mlx-lm) do.
//
// Token boundaries under masking are found by tokenising prefixes: the tokens of the prompt
// alone (or of the conversation up to an assistant turn) against those of the whole text;
// where the two disagree at the seam (a BPE merge across it), the differing tokens count as
// the later part, so no completion text is ever masked out.
//
// Length: an example keeps at most ctx + 1 tokens (ctx inputs, each with its next token as
// target); longer ones are truncated, keeping the start. Examples left with no target (all
// prompt, or the completion cut off by truncation) are dropped. Both are counted and reported
// once per file through the warn callback, never silently. A file with no examples left is an
// error.
//
// Errors are trit::Error naming the file and the 1-based line:
//   "data/train.jsonl:17: 'completion' is missing (the row has 'prompt')".
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/chat_template.h"

namespace trit::engine {

class Tokenizer;

// One training sequence. loss_mask is aligned with tokens: loss_mask[i] = 1 when tokens[i] is a
// prediction target (predicted from tokens[< i]); loss_mask[0] is always 0.
struct Example {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;

  int64_t n_targets() const;
};

struct DatasetOptions {
  int64_t ctx = 512;                 // training context: examples keep at most ctx + 1 tokens
  bool mask_prompt = false;          // loss on completions / assistant turns only
  bool add_eos = true;               // append eos to text and completion rows (and .txt files)
  bool completions_as_chat = false;  // prompt/completion rows as a user + assistant chat
};

// Called once per file for each kind of notice (truncated examples, dropped examples, a folder
// without valid.jsonl); may be empty.
using WarnFn = std::function<void(const std::string& message)>;

struct Dataset {
  std::string source;  // the file it came from, as given
  std::string kind;    // "text", "completions", "chat" or "plain text"
  std::vector<Example> examples;
  int64_t n_rows = 0;       // examples before dropping (JSONL rows, or .txt windows)
  int64_t n_truncated = 0;  // examples longer than ctx + 1 tokens, cut to that
  int64_t n_dropped = 0;    // examples without targets, removed from `examples`
  int64_t n_tokens = 0;     // tokens of the kept examples, after truncation
  int64_t n_targets = 0;    // target tokens of the kept examples
  int64_t max_len = 0;      // longest kept example, in tokens (at most ctx + 1)
};

struct DatasetSplits {
  Dataset train, valid, test;
  bool has_valid = false;
  bool has_test = false;
};

// A folder, a .jsonl file or a .txt file (see the top of this file). The chat template renders
// "messages" rows: the caller picks it (ChatTemplate::for_model, or builtin(name) for a user's
// choice).
DatasetSplits load_dataset(const std::string& path, const Tokenizer& tok, const ChatTemplate& chat,
                           const DatasetOptions& opt, const WarnFn& warn = {});

// One .jsonl or .txt file, by its extension (a validation file named on a command line).
Dataset load_data_file(const std::string& path, const Tokenizer& tok, const ChatTemplate& chat,
                       const DatasetOptions& opt, const WarnFn& warn = {});
Dataset load_jsonl(const std::string& path, const Tokenizer& tok, const ChatTemplate& chat,
                   const DatasetOptions& opt, const WarnFn& warn = {});
Dataset load_text_file(const std::string& path, const Tokenizer& tok, const DatasetOptions& opt,
                       const WarnFn& warn = {});
// JSONL held in memory; `name` stands for the file in messages.
Dataset parse_jsonl(std::string_view content, const std::string& name, const Tokenizer& tok,
                    const ChatTemplate& chat, const DatasetOptions& opt, const WarnFn& warn = {});

// The example of one row, before truncation (for tools and tests). Roles are not checked here.
Example make_text_example(const std::string& text, const Tokenizer& tok, const DatasetOptions& opt);
Example make_completion_example(const std::string& prompt, const std::string& completion,
                                const Tokenizer& tok, const ChatTemplate& chat,
                                const DatasetOptions& opt);
Example make_chat_example(const std::vector<ChatMessage>& messages, const Tokenizer& tok,
                          const ChatTemplate& chat, const DatasetOptions& opt);

// A batch of examples, right-padded. Position t of row b predicts targets[b, t] from
// tokens[b, 0..t]; padding and positions without a target have target -1 and mask 0.
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;   // (B,T) inputs; padding is token 0
  std::vector<int32_t> targets;  // (B,T) the next token where it is a target, else -1
  std::vector<float> mask;       // (B,T) 1 where targets >= 0, else 0
  std::vector<int32_t> lengths;  // (B) real input positions of each row (the rest is padding)
  std::vector<int64_t> indices;  // (B) which examples of the dataset
  int64_t n_targets = 0;         // sum of mask
};

// The batch of the given examples. T = pad_to when pad_to > 0 (an error when an example needs
// more), else the longest example's input length (its tokens - 1).
Batch make_batch(const Dataset& data, std::span<const int64_t> indices, int64_t pad_to = 0);

// Rows of a batch packed one after another without their padding, to be computed as one pass
// (model/forward.h's TrainBatch): tokens, targets and mask of sum(lengths) positions.
struct PackedRows {
  std::vector<int32_t> tokens, targets;
  std::vector<float> mask;
  std::vector<int64_t> lengths;  // each packed row's positions
  int64_t first_row = 0;         // the batch row of the first of them
  int64_t tokens_total() const { return int64_t(tokens.size()); }
};

// The non-empty rows of b in order, in passes of at most max_tokens positions each (a row
// longer than that is a pass of its own); max_tokens <= 0: one row a pass. Only the rows r with
// r % n_shares == share (a rank's share of a data-parallel batch).
std::vector<PackedRows> pack_rows(const Batch& b, int64_t max_tokens, int64_t share = 0,
                                  int64_t n_shares = 1);

// Where a BatchIterator stands: the next batch starts at position `index` of epoch `epoch`'s
// order. Serialised into checkpoints with nlohmann::json (to_json / from_json below).
struct BatchState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t index = 0;       // in examples, 0 .. n_examples
  int64_t n_examples = 0;  // of the dataset it ran over: a check that the data is the same
  int64_t batch = 0;
  bool shuffle = true;
};

void to_json(nlohmann::json& j, const BatchState& s);
void from_json(const nlohmann::json& j, BatchState& s);  // trit::Error on a missing/bad field

// Batches over a dataset, epoch after epoch. Each epoch visits every example once in an order
// that depends only on (seed, epoch): a Fisher-Yates shuffle driven by std::mt19937_64 (the
// same on every platform), or dataset order without shuffle. Batches hold `batch` examples;
// the last of an epoch holds the remainder (so it may be smaller), and a dataset smaller than
// `batch` gives one batch of all of it per epoch. The dataset must outlive the iterator.
class BatchIterator {
 public:
  BatchIterator(const Dataset& data, int64_t batch, uint64_t seed, bool shuffle = true,
                int64_t pad_to = 0);

  Batch next();

  BatchState state() const;
  // Continues exactly where `s` was taken. Throws trit::Error when s was taken over a dataset of
  // another size, or with another batch size or shuffle setting.
  void restore(const BatchState& s);

  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  // The order of one epoch: dataset indices.
  static std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

 private:
  const Dataset* data_;
  int64_t batch_;
  uint64_t seed_;
  bool shuffle_;
  int64_t pad_to_;
  int64_t epoch_ = 0;
  int64_t index_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace trit::engine
