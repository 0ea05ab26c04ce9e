// Scoring a model on data: the mean loss and perplexity over the target tokens of a data
// file (the rows fine-tuning reads), exact-match accuracy of greedy completions, and the
// perplexity of a text.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "trit/export.h"
#include "trit/model.h"

namespace trit {

struct EvalOptions {
  int64_t ctx = 512;          // longer examples are truncated, as in training
  bool mask_prompt = false;   // loss on completions / assistant turns only
  std::string chat_template;  // a built-in one instead of the model's
  bool exact_match = true;    // score {"prompt", "completion"} rows by greedy generation
  int64_t max_new = 0;        // exact match: tokens generated at most; 0: the reference's + 8
  std::vector<AdapterScale> adapters;
  // phase ("loss" or "exact match"), items done, items in all.
  std::function<void(std::string_view phase, int64_t done, int64_t total)> on_progress;
  std::function<void(const std::string& message)> on_warning;  // e.g. rows dropped
};

struct EvalResult {
  std::string data;              // the file
  std::string kind;              // "text", "completions", "chat" or "plain text"
  int64_t n_rows = 0;            // examples before rows without targets were dropped
  int64_t n_examples = 0;        // scored
  int64_t n_targets = 0;         // target tokens
  double loss = 0;               // mean -log p over the target tokens
  double perplexity = 0;         // exp(loss)
  bool has_exact_match = false;  // a completions file with exact_match on
  int64_t exact_scored = 0, exact_matched = 0;
  double exact_accuracy = 0;  // exact_matched / exact_scored (0 when nothing was scored)
};

// The loss of `model` on a data file (.jsonl rows as fine-tuning reads them, or .txt) and,
// for prompt/completion rows, exact match. Errors name the file and line.
TRIT_API EvalResult evaluate(Model& model, const std::string& data_file,
                             const EvalOptions& options = {});

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;  // nats per scored token
  int64_t n_scored = 0;
  int64_t n_chunks = 0;
};

// Splits the text's tokens into chunks of ctx and scores every prediction within a chunk.
// progress(chunk, chunks, running perplexity).
TRIT_API PerplexityResult
perplexity(Model& model, std::string_view text, int64_t ctx,
           const std::function<void(int64_t, int64_t, double)>& progress = {},
           std::span<const AdapterScale> adapters = {});

}  // namespace trit
