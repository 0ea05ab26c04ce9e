#include "infer/evaluate.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/numeric.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

// A row prepared for greedy decoding.
struct Prepared {
  std::vector<int32_t> prompt;  // tokens before the completion
  std::string reference;        // the completion's text (see evaluate.h)
  int64_t max_new = 0;
};

Prepared prepare(const CompletionRow& row, const Tokenizer& tok, const ChatTemplate& chat,
                 const DatasetOptions& opt, int64_t max_new) {
  DatasetOptions split = opt;
  split.mask_prompt = true;
  const Example ex = make_completion_example(row.prompt, row.completion, tok, chat, split);
  Prepared p;
  const auto first = std::find(ex.loss_mask.begin(), ex.loss_mask.end(), uint8_t(1));
  if (first == ex.loss_mask.end()) return p;  // no completion tokens at all
  const size_t begin = size_t(first - ex.loss_mask.begin());
  size_t end = begin;  // one past the last target
  for (size_t i = begin; i < ex.loss_mask.size(); ++i) {
    if (ex.loss_mask[i]) end = i + 1;
  }
  while (end > begin && tok.is_end_of_generation(ex.tokens[end - 1])) --end;
  p.prompt.assign(ex.tokens.begin(), ex.tokens.begin() + ptrdiff_t(begin));
  for (size_t i = begin; i < end; ++i) p.reference += tok.token_to_piece(ex.tokens[i], true);
  p.max_new = max_new > 0 ? max_new : int64_t(end - begin) + 8;
  return p;
}

}  // namespace

LossResult evaluate_loss(const Model& model, const Dataset& data, Backend& backend,
                         const ForwardOptions& fwd, const EvalProgress& progress) {
  LossResult r;
  if (data.examples.empty()) fail(data.source, ": no examples to evaluate");
  const int64_t n_vocab = model.hparams().n_vocab;
  int64_t max_inputs = 1;
  for (const Example& ex : data.examples) {
    max_inputs = std::max(max_inputs, int64_t(ex.tokens.size()) - 1);
  }
  Session session(model, max_inputs, backend, fwd);
  std::vector<float> logits;  // (n - 1, n_vocab)
  const int64_t total = int64_t(data.examples.size());
  for (const Example& ex : data.examples) {
    const int64_t n = int64_t(ex.tokens.size());
    if (n < 2) continue;  // no target possible
    // Logits from the position that predicts the first target on: a masked prompt before it
    // only fills the cache (its last token's logits aside), and only from where it parts from
    // the tokens the cache holds (examples often share an instruction).
    const auto first = std::find(ex.loss_mask.begin() + 1, ex.loss_mask.end(), uint8_t(1));
    if (first != ex.loss_mask.end()) {
      const int64_t p0 = int64_t(first - ex.loss_mask.begin()) - 1;
      const auto at = [&](int64_t i) { return ex.tokens.begin() + i; };
      const int64_t kept = session.reuse_prefix(std::vector<int32_t>(at(0), at(p0 + 1)));
      if (kept < p0) session.eval(std::vector<int32_t>(at(kept), at(p0)), logits);
      session.eval(std::vector<int32_t>(at(p0), at(n - 1)), logits, true);
      for (int64_t i = p0 + 1; i < n; ++i) {
        if (!ex.loss_mask[size_t(i)]) continue;
        const float* row = logits.data() + (i - 1 - p0) * n_vocab;
        r.sum_nll += log_sum_exp(row, n_vocab) - double(row[ex.tokens[size_t(i)]]);
        ++r.n_targets;
      }
    }
    ++r.n_examples;
    if (progress) progress("loss", r.n_examples, total);
  }
  if (r.n_targets == 0) fail(data.source, ": no target tokens to evaluate");
  r.mean_loss = r.sum_nll / double(r.n_targets);
  r.perplexity = std::exp(r.mean_loss);
  return r;
}

std::vector<CompletionRow> read_completion_rows(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<CompletionRow> rows;
  size_t pos = content.starts_with("\xef\xbb\xbf") ? 3 : 0;  // a UTF-8 byte order mark
  int64_t line_no = 0;
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    if (eol == std::string::npos) eol = content.size();
    const std::string_view line = std::string_view(content).substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line_no, ": not valid JSON (", e.what(), ")");
    }
    if (!row.is_object() || !row.contains("prompt") || !row.contains("completion")) continue;
    const auto& p = row.at("prompt");
    const auto& c = row.at("completion");
    if (!p.is_string() || !c.is_string()) {
      fail(path, ":", line_no, ": 'prompt' and 'completion' must be strings");
    }
    rows.push_back({line_no, p.get<std::string>(), c.get<std::string>()});
  }
  return rows;
}

ExactMatchResult evaluate_exact_match(const Model& model, const std::vector<CompletionRow>& rows,
                                      const ChatTemplate& chat, const DatasetOptions& opt,
                                      int64_t max_new, Backend& backend, const ForwardOptions& fwd,
                                      const EvalProgress& progress) {
  const Tokenizer* tok = model.tokenizer();
  if (!tok) fail(model.path(), ": the model has no tokenizer; exact match needs one");
  std::vector<Prepared> prepared;
  prepared.reserve(rows.size());
  int64_t n_ctx = 1;
  for (const CompletionRow& row : rows) {
    prepared.push_back(prepare(row, *tok, chat, opt, max_new));
    const Prepared& p = prepared.back();
    if (!p.reference.empty()) n_ctx = std::max(n_ctx, int64_t(p.prompt.size()) + p.max_new);
  }
  ExactMatchResult r;
  Session session(model, n_ctx, backend, fwd);
  GenerateOptions gen;
  gen.sampler.temperature = 0;  // greedy: argmax, no penalty
  gen.sampler.repeat_penalty = 1.0f;
  gen.stop_at_end = true;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Prepared& p = prepared[i];
    RowMatch m;
    m.line = rows[i].line;
    m.reference = p.reference;
    if (!p.reference.empty() && !p.prompt.empty()) {
      m.scored = true;
      // The cache keeps what this prompt shares with the last one's tokens.
      const int64_t kept = session.reuse_prefix(p.prompt);
      gen.n_predict = p.max_new;
      gen.on_token = [&](int32_t id) {
        m.generated += tok->token_to_piece(id, true);
        const size_t n = std::min(m.generated.size(), p.reference.size());
        if (m.generated.compare(0, n, p.reference, 0, n) != 0) return false;  // diverged
        return m.generated.size() < p.reference.size();
      };
      generate(session, std::vector<int32_t>(p.prompt.begin() + kept, p.prompt.end()), gen, tok);
      m.matched = m.generated.size() >= p.reference.size() &&
                  m.generated.compare(0, p.reference.size(), p.reference) == 0;
      ++r.n_scored;
      r.n_matched += m.matched;
    }
    r.rows.push_back(std::move(m));
    if (progress) progress("exact match", int64_t(i + 1), int64_t(rows.size()));
  }
  r.accuracy = r.n_scored > 0 ? double(r.n_matched) / double(r.n_scored) : 0.0;
  return r;
}

EvalResult evaluate_file(const Model& model, const std::string& path, const ChatTemplate& chat,
                         const EvalOptions& options, Backend& backend, const ForwardOptions& fwd,
                         const WarnFn& warn, const EvalProgress& progress) {
  const Tokenizer* tok = model.tokenizer();
  if (!tok) fail(model.path(), ": the model has no tokenizer; evaluating data needs one");
  const Dataset data = load_data_file(path, *tok, chat, options.data, warn);
  EvalResult r;
  r.source = path;
  r.kind = data.kind;
  r.n_rows = data.n_rows;
  r.loss = evaluate_loss(model, data, backend, fwd, progress);
  if (options.exact_match && data.kind == "completions") {
    r.has_exact_match = true;
    r.exact = evaluate_exact_match(model, read_completion_rows(path), chat, options.data,
                                   options.max_new, backend, fwd, progress);
  }
  return r;
}

}  // namespace trit::engine
