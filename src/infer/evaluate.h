// Evaluation of a model on a data file (`trit eval`): mean loss and perplexity over the target
// tokens, and exact-match accuracy of greedy completions.
//
// Loss: the examples are the dataset module's (train/dataset.h: same tokenisation, bos/eos,
// prompt masking, truncation to ctx + 1 tokens, examples without targets dropped). Each target
// token (loss_mask = 1) costs -log softmax(logits of the position before it)[token]; the mean
// loss is the sum over all examples divided by the number of target tokens (a mean over tokens,
// not over rows), and perplexity = exp(mean loss).
//
// Exact match, for {"prompt", "completion"} rows only:
//   - the row's tokens (make_completion_example, without truncation) split where the completion
//     begins as prompt masking defines it, whether or not the loss masks the prompt: the prompt
//     tokens are those before the first completion target;
//   - the reference is the completion's target tokens without trailing end-of-generation
//     tokens (eos, eot, ...), as text: their pieces joined, special tokens as their text;
//   - the model decodes greedily from the prompt tokens (argmax, no penalties), at most
//     max_new tokens (default: the reference's tokens + 8), stopping at an end-of-generation
//     token, which is not part of the text;
//   - the row matches when the first len(reference) bytes of the generated text equal the
//     reference. Text after that is ignored, so the model need not stop where the completion
//     ends (a trailing eos is neither required nor counted). Comparing text rather than tokens
//     accepts another tokenisation of the same text. Rows whose reference is empty are not
//     scored.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "data/dataset.h"
#include "model/forward.h"

namespace trit::engine {

class Model;

// phase ("loss" or "exact match"), items done, items in all.
using EvalProgress = std::function<void(std::string_view phase, int64_t done, int64_t total)>;

struct LossResult {
  int64_t n_examples = 0;
  int64_t n_targets = 0;
  double sum_nll = 0;    // nats, over all target tokens
  double mean_loss = 0;  // sum_nll / n_targets
  double perplexity = 0;
};

// The loss over every example of the dataset (one forward pass per example).
LossResult evaluate_loss(const Model& model, const Dataset& data, Backend& backend,
                         const ForwardOptions& fwd, const EvalProgress& progress = {});

// A prompt/completion row of a JSONL file and its 1-based line.
struct CompletionRow {
  int64_t line = 0;
  std::string prompt, completion;
};
// The prompt/completion rows of a JSONL file (other rows are skipped; the file is expected to
// have passed load_data_file, which reports malformed rows by line).
std::vector<CompletionRow> read_completion_rows(const std::string& path);

struct RowMatch {
  int64_t line = 0;
  bool scored = false;  // false when the reference is empty
  bool matched = false;
  std::string reference, generated;
};

struct ExactMatchResult {
  int64_t n_scored = 0;
  int64_t n_matched = 0;
  double accuracy = 0;  // n_matched / n_scored (0 when nothing was scored)
  std::vector<RowMatch> rows;
};

// Greedy completions of the rows, tokenised as `opt` says (mask_prompt is ignored: the split is
// always the masked one). max_new <= 0: the reference's tokens + 8. Throws when the model has no
// tokenizer.
ExactMatchResult evaluate_exact_match(const Model& model, const std::vector<CompletionRow>& rows,
                                      const ChatTemplate& chat, const DatasetOptions& opt,
                                      int64_t max_new, Backend& backend, const ForwardOptions& fwd,
                                      const EvalProgress& progress = {});

struct EvalOptions {
  DatasetOptions data;      // ctx, mask_prompt, add_eos, completions_as_chat
  int64_t max_new = 0;      // exact match: tokens generated at most (0: reference + 8)
  bool exact_match = true;  // score prompt/completion rows by greedy generation
};

struct EvalResult {
  std::string source;  // the data file
  std::string kind;    // the dataset's kind: "text", "completions", "chat" or "plain text"
  int64_t n_rows = 0;  // examples before dropping
  LossResult loss;
  bool has_exact_match = false;  // a completions file evaluated with exact_match
  ExactMatchResult exact;
};

// Loads the file with load_data_file (its errors name the file and line; warnings go to warn),
// then computes the loss and, for prompt/completion rows, exact match.
EvalResult evaluate_file(const Model& model, const std::string& path, const ChatTemplate& chat,
                         const EvalOptions& options, Backend& backend, const ForwardOptions& fwd,
                         const WarnFn& warn = {}, const EvalProgress& progress = {});

}  // namespace trit::engine
