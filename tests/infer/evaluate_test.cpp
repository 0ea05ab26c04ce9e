// trit eval: loss and perplexity against a computation from Session logits here, exact match of
// greedy completions, and the dataset module's errors.
#include "infer/evaluate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "data/chat_template.h"
#include "infer/session.h"
#include "model/model.h"
#include "support/files.h"
#include "support/models.h"
#include "tokenizer/tokenizer.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::jsonl;
using test::TempDir;

std::string make_model(const TempDir& dir) {
  return test::create_model(dir, "m.gguf", test::tiny_options(21));
}

// Mean loss over the target tokens, from Session logits and a log-softmax in double here.
double reference_loss(const Model& m, const Dataset& d, int64_t* n_targets) {
  ThreadPool pool(1);
  const int64_t V = m.hparams().n_vocab;
  double sum = 0;
  *n_targets = 0;
  for (const Example& ex : d.examples) {
    Session s(m, int64_t(ex.tokens.size()), pool, ForwardOptions{true, nullptr}, 5);
    std::vector<float> logits;
    s.eval(ex.tokens, logits, true);  // every position, the last one too (unused)
    for (size_t i = 1; i < ex.tokens.size(); ++i) {
      if (!ex.loss_mask[i]) continue;
      const float* row = logits.data() + (i - 1) * size_t(V);
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      sum += (mx + std::log(z)) - double(row[ex.tokens[i]]);
      ++*n_targets;
    }
  }
  return sum / double(*n_targets);
}

TEST(Eval, LossAndPerplexityMatchSessionLogits) {
  TempDir dir;
  auto model = Model::load(make_model(dir));
  const Tokenizer& tok = *model->tokenizer();
  const ChatTemplate chat = ChatTemplate::for_model(model->file());
  test::write_file(dir.file("text.jsonl"),
                   jsonl({{{"text", "the quick brown fox"}},
                          {{"text", "jumps over the lazy dog, again and again"}},
                          {{"text", "a"}}}));
  test::write_file(dir.file("qa.jsonl"), jsonl({{{"prompt", "2+2="}, {"completion", " four"}},
                                                {{"prompt", "sky: "}, {"completion", "blue"}}}));
  ThreadPool pool(2);
  CpuBackend cpu(pool);
  for (const auto& [file, mask] : std::vector<std::pair<std::string, bool>>{
           {"text.jsonl", false}, {"qa.jsonl", false}, {"qa.jsonl", true}}) {
    SCOPED_TRACE(file + (mask ? " masked" : ""));
    EvalOptions opt;
    opt.data.ctx = 24;  // truncates the long text row
    opt.data.mask_prompt = mask;
    opt.exact_match = false;
    const EvalResult r =
        evaluate_file(*model, dir.file(file), chat, opt, cpu, ForwardOptions{true, nullptr});
    const Dataset d = load_data_file(dir.file(file), tok, chat, opt.data);
    int64_t n_targets = 0;
    const double want = reference_loss(*model, d, &n_targets);
    EXPECT_EQ(r.loss.n_targets, n_targets);
    EXPECT_EQ(r.loss.n_targets, d.n_targets);
    EXPECT_EQ(r.loss.n_examples, int64_t(d.examples.size()));
    EXPECT_NEAR(r.loss.mean_loss, want, 1e-9 * want);
    EXPECT_NEAR(r.loss.perplexity, std::exp(want), 1e-9 * std::exp(want));
    EXPECT_FALSE(r.has_exact_match);
  }
}

// Greedy continuation of `prompt` by the model: up to n tokens, ending early at end of generation.
std::vector<int32_t> greedy(const Model& m, const std::vector<int32_t>& prompt, int n) {
  ThreadPool pool(1);
  Session s(m, int64_t(prompt.size()) + n, pool, ForwardOptions{true, nullptr});
  std::vector<float> logits;
  s.eval(prompt, logits);
  std::vector<int32_t> out;
  const int64_t V = m.hparams().n_vocab;
  for (int i = 0; i < n; ++i) {
    const int32_t id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (m.tokenizer()->is_end_of_generation(id)) break;
    out.push_back(id);
    if (i + 1 < n) s.eval({id}, logits);
  }
  EXPECT_EQ(int64_t(logits.size()), V);
  return out;
}

TEST(Eval, ExactMatchOfTheModelsOwnGreedyCompletions) {
  TempDir dir;
  auto model = Model::load(make_model(dir));
  const Tokenizer& tok = *model->tokenizer();
  // Rows whose completion is what the model generates greedily: prompts whose continuation
  // is printable text (the random model may also produce stray bytes or special tokens).
  std::vector<nlohmann::json> same, differ;
  for (const std::string base :
       {"hello", "the cat", "zebra", "one two", "abc", "quiet", "data", "x", "moon", "river",
        "green tea", "stone", "plain", "fire", "lamp", "kite"}) {
    const std::vector<int32_t> ids = tok.encode(base, tok.add_bos_default(), true);
    const std::vector<int32_t> gen = greedy(*model, ids, 4);
    if (gen.empty()) continue;
    std::string text;
    for (int32_t id : gen) text += tok.token_to_piece(id, true);
    bool printable = !text.empty();
    for (unsigned char c : text) printable = printable && c >= 0x20 && c < 0x7f;
    // The prompt's tokens must stay the same with the completion after it.
    const std::vector<int32_t> whole = tok.encode(base + text, tok.add_bos_default(), true);
    if (!printable || !std::equal(ids.begin(), ids.end(), whole.begin())) continue;
    same.push_back({{"prompt", base}, {"completion", text}});
    std::string other = text;
    other.back() = other.back() == 'q' ? 'r' : 'q';
    differ.push_back({{"prompt", base}, {"completion", other}});
    if (same.size() == 3) break;
  }
  ASSERT_GE(same.size(), 2u) << "too few prompts with printable greedy completions";
  test::write_file(dir.file("same.jsonl"), jsonl(same));
  test::write_file(dir.file("differ.jsonl"), jsonl(differ));
  const ChatTemplate chat = ChatTemplate::for_model(model->file());
  ThreadPool pool(2);
  CpuBackend cpu(pool);
  for (bool mask : {false, true}) {
    EvalOptions opt;
    opt.data.mask_prompt = mask;
    EvalResult r = evaluate_file(*model, dir.file("same.jsonl"), chat, opt, cpu,
                                 ForwardOptions{true, nullptr});
    ASSERT_TRUE(r.has_exact_match);
    EXPECT_EQ(r.exact.n_scored, int64_t(same.size()));
    EXPECT_EQ(r.exact.n_matched, int64_t(same.size()));
    EXPECT_EQ(r.exact.accuracy, 1.0);
    for (const RowMatch& m : r.exact.rows) {
      EXPECT_TRUE(m.matched) << m.line << ": '" << m.generated << "' vs '" << m.reference << "'";
    }
    r = evaluate_file(*model, dir.file("differ.jsonl"), chat, opt, cpu,
                      ForwardOptions{true, nullptr});
    EXPECT_EQ(r.exact.n_scored, int64_t(differ.size()));
    EXPECT_EQ(r.exact.n_matched, 0);
    EXPECT_EQ(r.exact.accuracy, 0.0);
    EXPECT_EQ(r.exact.rows[0].line, 1);
  }
  // A budget too short for the completion cannot match.
  EvalOptions opt;
  opt.max_new = 1;
  const std::string first = same[0]["completion"].get<std::string>();
  const std::vector<int32_t> first_ids = greedy(
      *model, tok.encode(same[0]["prompt"].get<std::string>(), tok.add_bos_default(), true), 1);
  if (tok.token_to_piece(first_ids[0], true).size() < first.size()) {
    const EvalResult r = evaluate_file(*model, dir.file("same.jsonl"), chat, opt, cpu,
                                       ForwardOptions{true, nullptr});
    EXPECT_FALSE(r.exact.rows[0].matched);
  }
}

// Rows that share a long instruction, evaluated in one file (each row's prompt reuses what the
// cache holds of the row before) and each alone in a file of its own: the same summed loss, and
// every row's reference, the shipped model's own greedy completion from a fresh session, matched.
TEST(Eval, RowsSharingAPrefixEvaluateAsAlone) {
  TempDir dir;
  auto model = Model::load(std::string(TRIT_TEST_DATA) + "/../../models/austen-tiny.gguf");
  const Tokenizer& tok = *model->tokenizer();
  const ChatTemplate chat = ChatTemplate::for_model(model->file());
  std::vector<nlohmann::json> all;
  for (const std::string name : {"Anne Elliot", "Anne Weston", "Emma Woodhouse", "Jane Bennet"}) {
    const std::string prompt = "Write the name surname first: " + name + ".\nAnswer:";
    const std::vector<int32_t> gen =
        greedy(*model, tok.encode(prompt, tok.add_bos_default(), true), 5);
    std::string text;
    for (int32_t id : gen) text += tok.token_to_piece(id, true);
    ASSERT_FALSE(text.empty());
    all.push_back({{"prompt", prompt}, {"completion", text}});
  }
  test::write_file(dir.file("all.jsonl"), jsonl(all));
  ThreadPool pool(2);
  CpuBackend cpu(pool);
  for (bool mask : {false, true}) {
    SCOPED_TRACE(mask ? "masked" : "whole rows");
    EvalOptions opt;
    opt.data.mask_prompt = mask;
    opt.max_new = 5;
    const EvalResult together =
        evaluate_file(*model, dir.file("all.jsonl"), chat, opt, cpu, ForwardOptions{true, nullptr});
    EXPECT_EQ(together.exact.n_matched, int64_t(all.size()));
    double sum_nll = 0;
    int64_t n_targets = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      const std::string f = dir.file("row" + std::to_string(i) + ".jsonl");
      test::write_file(f, jsonl({all[i]}));
      const EvalResult alone =
          evaluate_file(*model, f, chat, opt, cpu, ForwardOptions{true, nullptr});
      sum_nll += alone.loss.sum_nll;
      n_targets += alone.loss.n_targets;
      EXPECT_EQ(together.exact.rows[i].generated, all[i]["completion"]) << "row " << i;
    }
    EXPECT_EQ(together.loss.n_targets, n_targets);
    EXPECT_NEAR(together.loss.sum_nll, sum_nll, 1e-12 * sum_nll);
  }
}

TEST(Eval, MalformedDataGivesTheLineNumberedError) {
  TempDir dir;
  auto model = Model::load(make_model(dir));
  const ChatTemplate chat = ChatTemplate::for_model(model->file());
  test::write_file(dir.file("bad.jsonl"),
                   "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"c\"}\n");
  ThreadPool pool(1);
  CpuBackend cpu(pool);
  try {
    evaluate_file(*model, dir.file("bad.jsonl"), chat, EvalOptions{}, cpu, ForwardOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("bad.jsonl") + ":3:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'completion' is missing"), std::string::npos) << msg;
  }
  EXPECT_THROW(
      evaluate_file(*model, dir.file("none.jsonl"), chat, EvalOptions{}, cpu, ForwardOptions{}),
      Error);
}

}  // namespace
}  // namespace trit::engine
