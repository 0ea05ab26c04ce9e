// The C API (include/trit/trit.h): every function at least once, the statuses and messages of
// its errors (NULL arguments, bad paths, bad option values), cancelling a generation from
// another thread, and a cancelled fine-tune that resumes from its checkpoint. Runs on a tiny
// random model (byte tokenizer) made by trit_create_model, on the CPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "trit/trit.h"
#include "trit/trit.hpp"
#include "trit/version.h"

namespace {

namespace fs = std::filesystem;

struct ModelCloser {
  void operator()(trit_model* m) const { trit_model_close(m); }
};
struct SessionFreer {
  void operator()(trit_session* s) const { trit_session_free(s); }
};
struct TrainerFreer {
  void operator()(trit_trainer* t) const { trit_trainer_free(t); }
};
using ModelPtr = std::unique_ptr<trit_model, ModelCloser>;
using SessionPtr = std::unique_ptr<trit_session, SessionFreer>;
using TrainerPtr = std::unique_ptr<trit_trainer, TrainerFreer>;

// A string this API returned, freed at the end of scope.
struct Text {
  char* p = nullptr;
  ~Text() { trit_string_free(p); }
  std::string str() const { return p ? p : ""; }
};

std::string last_error() {
  return trit_last_error();
}

// Expects `status` and a message that contains `needle`.
#define EXPECT_FAILS(call, status, needle)                                   \
  do {                                                                       \
    const trit_status st_ = (call);                                          \
    EXPECT_EQ(st_, status) << trit_status_name(st_) << ": " << last_error(); \
    EXPECT_NE(last_error().find(needle), std::string::npos) << last_error(); \
  } while (0)

class CApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("trit_c_api_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    model_path_ = (dir_ / "tiny.gguf").string();
    trit_create_options o = trit_create_options_default();
    o.preset = "tiny";
    o.layers = 1;
    Text summary;
    ASSERT_EQ(trit_create_model(model_path_.c_str(), &o, &summary.p), TRIT_OK) << last_error();
    ASSERT_NE(summary.str().find("wrote"), std::string::npos) << summary.str();
    // Prompt/completion rows (the byte tokenizer makes a few dozen tokens of each).
    data_dir_ = (dir_ / "data").string();
    fs::create_directories(data_dir_);
    for (const char* name : {"train.jsonl", "valid.jsonl", "test.jsonl"}) {
      std::ofstream out(fs::path(data_dir_) / name);
      const char* names[] = {"Ann Lee", "Bo Chan", "Cy Diaz", "Di Eng", "Ed Fox", "Flo Gray"};
      for (const char* n : names) {
        const std::string s(n);
        const size_t sp = s.find(' ');
        out << R"({"prompt": "Surname first: )" << s << R"(\nAnswer:", "completion": " )"
            << s.substr(sp + 1) << ", " << s.substr(0, sp) << "\"}\n";
      }
    }
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static ModelPtr open_model() {
    trit_model_options o = trit_model_options_default();
    o.device = "cpu";
    o.threads = 2;
    trit_model* m = nullptr;
    EXPECT_EQ(trit_model_open(model_path_.c_str(), &o, &m), TRIT_OK) << last_error();
    return ModelPtr(m);
  }

  static SessionPtr make_session(trit_model* m, int64_t n_ctx = 0) {
    trit_session_options o = trit_session_options_default();
    o.n_ctx = n_ctx;
    trit_session* s = nullptr;
    EXPECT_EQ(trit_session_create(m, &o, &s), TRIT_OK) << last_error();
    return SessionPtr(s);
  }

  // Options of a short fine-tune on the test data, writing `name`.gguf.
  static trit_train_options train_options(const std::string& output) {
    trit_train_options o = trit_train_options_default();
    o.data = data_dir_.c_str();
    o.output = output.c_str();
    o.steps = 3;
    o.ctx = 48;
    o.batch = 2;
    o.lr = 1e-3;
    o.rank = 4;
    o.val_every = 0;
    o.seed = 1;
    return o;
  }

  static inline fs::path dir_;
  static inline std::string model_path_, data_dir_;
};

// ---- status, errors, memory, version ----

TEST_F(CApi, VersionAndStatusNames) {
  EXPECT_STREQ(trit_version(), TRIT_VERSION_STRING);
  EXPECT_STREQ(trit_status_name(TRIT_OK), "ok");
  EXPECT_STREQ(trit_status_name(TRIT_ERROR_INVALID_ARGUMENT), "invalid argument");
  EXPECT_STREQ(trit_status_name(TRIT_ERROR_IO), "i/o");
  EXPECT_STREQ(trit_status_name(TRIT_ERROR_DEVICE), "device");
  EXPECT_STREQ(trit_status_name(TRIT_ERROR_OUT_OF_MEMORY), "out of memory");
  EXPECT_STREQ(trit_status_name(TRIT_ERROR_UNKNOWN), "unknown");
  EXPECT_STREQ(trit_stop_reason_name(TRIT_STOP_MAX_TOKENS), "length");
  EXPECT_STREQ(trit_stop_reason_name(TRIT_STOP_CONTEXT_FULL), "length");
  EXPECT_STREQ(trit_stop_reason_name(TRIT_STOP_END_OF_GENERATION), "stop");
  EXPECT_STREQ(trit_stop_reason_name(TRIT_STOP_STRING), "stop");
  EXPECT_STREQ(trit_stop_reason_name(TRIT_STOP_CALLBACK), "cancelled");
  EXPECT_STREQ(trit_stop_reason_name(TRIT_STOP_CANCELLED), "cancelled");
  trit_string_free(nullptr);
  trit_tokens_free(nullptr);
  trit_devices_free(nullptr);
}

TEST_F(CApi, LastErrorIsPerThreadAndClearedBySuccess) {
  trit_model* m = nullptr;
  EXPECT_EQ(trit_model_open("/nonexistent/a.gguf", nullptr, &m), TRIT_ERROR_IO);
  EXPECT_EQ(m, nullptr);
  const std::string here = last_error();
  EXPECT_NE(here.find("/nonexistent/a.gguf"), std::string::npos) << here;
  std::string there = "unset";
  std::thread([&] { there = last_error(); }).join();
  EXPECT_EQ(there, "");           // another thread's last error is its own
  EXPECT_EQ(last_error(), here);  // and theirs leaves ours alone
  Text report;
  EXPECT_EQ(trit_devices_report(&report.p), TRIT_OK);
  EXPECT_EQ(last_error(), "");
}

TEST_F(CApi, DefaultsMirrorTheCppApi) {
  const trit_model_options m = trit_model_options_default();
  EXPECT_EQ(m.device, nullptr);
  EXPECT_EQ(m.threads, 0);
  EXPECT_EQ(m.max_buffer_mb, 0);
  EXPECT_EQ(m.mem_budget_mb, 0);
  EXPECT_EQ(m.cache_type, nullptr);
  EXPECT_TRUE(m.act_quant);
  const trit_session_options s = trit_session_options_default();
  EXPECT_EQ(s.n_ctx, 0);
  EXPECT_EQ(s.n_batch, 64);
  const trit_generate_options g = trit_generate_options_default();
  EXPECT_EQ(g.max_tokens, 128);
  EXPECT_FLOAT_EQ(g.sampling.temperature, 0.8f);
  EXPECT_EQ(g.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(g.sampling.top_p, 0.95f);
  EXPECT_FLOAT_EQ(g.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(g.sampling.repeat_penalty, 1.0f);
  EXPECT_EQ(g.sampling.repeat_last_n, 64);
  EXPECT_EQ(g.sampling.frequency_penalty, 0.0f);
  EXPECT_EQ(g.sampling.presence_penalty, 0.0f);
  EXPECT_EQ(g.sampling.logit_bias, nullptr);
  EXPECT_EQ(g.sampling.n_logit_bias, 0u);
  EXPECT_TRUE(g.parse_special);
  EXPECT_FALSE(g.ignore_eos);
  const trit_train_options t = trit_train_options_default();
  EXPECT_STREQ(t.targets, "all");
  EXPECT_STREQ(t.schedule, "constant");
  EXPECT_EQ(t.rank, 8);
  EXPECT_FLOAT_EQ(t.alpha, 16.0f);
  EXPECT_DOUBLE_EQ(t.lr, 1e-4);
  EXPECT_DOUBLE_EQ(t.grad_clip, 1.0);
  EXPECT_EQ(t.epochs, 1);
  EXPECT_EQ(t.ctx, 512);
  EXPECT_EQ(t.batch, 4);
  EXPECT_EQ(t.grad_accum, 1);
  EXPECT_TRUE(t.grad_checkpointing);
  EXPECT_EQ(t.val_every, 50);
  EXPECT_EQ(t.max_bad_steps, 5);
  const trit_eval_options e = trit_eval_options_default();
  EXPECT_EQ(e.ctx, 512);
  EXPECT_TRUE(e.exact_match);
  const trit_create_options c = trit_create_options_default();
  EXPECT_STREQ(c.type, "tq2_0");
  EXPECT_STREQ(c.embd_type, "f16");
  EXPECT_EQ(c.seed, 42u);
  const trit_merge_options mg = trit_merge_options_default();
  EXPECT_STREQ(mg.mode, "float");
  EXPECT_STREQ(mg.type, "f16");
  const trit_convert_options cv = trit_convert_options_default();
  EXPECT_EQ(cv.type, nullptr);
}

TEST_F(CApi, NullHandlesAreIgnoredOrRefused) {
  trit_model_close(nullptr);
  trit_session_free(nullptr);
  trit_trainer_free(nullptr);
  trit_session_cancel(nullptr);
  trit_session_reset(nullptr);
  trit_trainer_pause(nullptr);
  trit_trainer_resume(nullptr);
  trit_trainer_cancel(nullptr);
  EXPECT_EQ(trit_session_n_past(nullptr), 0);
  EXPECT_EQ(trit_session_n_ctx(nullptr), 0);
  EXPECT_STREQ(trit_adapter_path(nullptr), "");
  EXPECT_STREQ(trit_adapter_summary(nullptr), "");
  trit_model_info info;
  EXPECT_FAILS(trit_model_get_info(nullptr, &info), TRIT_ERROR_INVALID_ARGUMENT,
               "trit_model_get_info: model is NULL");
  trit_session* s = nullptr;
  EXPECT_FAILS(trit_session_create(nullptr, nullptr, &s), TRIT_ERROR_INVALID_ARGUMENT,
               "model is NULL");
  EXPECT_FAILS(trit_session_generate(nullptr, "x", nullptr, nullptr), TRIT_ERROR_INVALID_ARGUMENT,
               "session is NULL");
  EXPECT_FAILS(trit_session_chat(nullptr, nullptr, 0, nullptr, nullptr),
               TRIT_ERROR_INVALID_ARGUMENT, "session is NULL");
  trit_trainer* t = nullptr;
  EXPECT_FAILS(trit_trainer_create(nullptr, nullptr, &t), TRIT_ERROR_INVALID_ARGUMENT,
               "model is NULL");
  EXPECT_FAILS(trit_trainer_run(nullptr, nullptr), TRIT_ERROR_INVALID_ARGUMENT, "trainer is NULL");
  trit_eval_result er;
  EXPECT_FAILS(trit_evaluate(nullptr, "x.jsonl", nullptr, &er), TRIT_ERROR_INVALID_ARGUMENT,
               "model is NULL");
  EXPECT_FAILS(trit_list_devices(nullptr, nullptr), TRIT_ERROR_INVALID_ARGUMENT, "devices is NULL");
  EXPECT_FAILS(trit_devices_report(nullptr), TRIT_ERROR_INVALID_ARGUMENT, "text is NULL");
}

// ---- models ----

TEST_F(CApi, OpenModelAndInfo) {
  ModelPtr m = open_model();
  ASSERT_TRUE(m);
  trit_model_info info;
  ASSERT_EQ(trit_model_get_info(m.get(), &info), TRIT_OK);
  EXPECT_EQ(std::string(info.path), model_path_);
  EXPECT_STREQ(info.arch, "bitnet");
  EXPECT_EQ(info.n_vocab, 512);
  EXPECT_EQ(info.n_embd, 256);
  EXPECT_EQ(info.n_layer, 1);
  EXPECT_EQ(info.n_head, 4);
  EXPECT_EQ(info.n_head_kv, 2);
  EXPECT_EQ(info.n_ctx_train, 512);
  EXPECT_TRUE(info.has_tokenizer);
  EXPECT_TRUE(info.tied_head);
  EXPECT_FALSE(info.has_embedded_adapter);
  EXPECT_STREQ(info.chat_template, "bitnet");  // the byte vocabulary has <|eot_id|>
  EXPECT_EQ(info.bos, 256);
  EXPECT_EQ(info.eos, 257);
  EXPECT_EQ(std::string(info.device).rfind("cpu", 0), 0u) << info.device;
  EXPECT_STREQ(info.device_fallback, "");
  EXPECT_STREQ(info.family, "bitnet");
  EXPECT_STREQ(info.activation, "relu2");
  EXPECT_STREQ(info.activation_source, "from bitnet.hidden_activation");
  // The override, and a bad value named with its option.
  trit_model_options o = trit_model_options_default();
  o.device = "cpu";
  o.activation = "silu";
  trit_model* silu = nullptr;
  ASSERT_EQ(trit_model_open(model_path_.c_str(), &o, &silu), TRIT_OK) << last_error();
  ASSERT_EQ(trit_model_get_info(silu, &info), TRIT_OK);
  EXPECT_STREQ(info.activation, "silu");
  EXPECT_STREQ(info.activation_source, "set by the caller (--activation)");
  trit_model_close(silu);
  o.activation = "gelu";
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &silu), TRIT_ERROR_INVALID_ARGUMENT,
               "activation is 'gelu', expected relu2 or silu");
}

TEST_F(CApi, OpenModelErrors) {
  trit_model* m = nullptr;
  trit_model_options o = trit_model_options_default();
  o.device = "cpu";
  EXPECT_FAILS(trit_model_open(nullptr, &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "trit_model_open: path is NULL");
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, nullptr), TRIT_ERROR_INVALID_ARGUMENT,
               "model is NULL");
  const std::string missing = (dir_ / "missing.gguf").string();
  EXPECT_FAILS(trit_model_open(missing.c_str(), &o, &m), TRIT_ERROR_IO, missing);
  const std::string junk = (dir_ / "junk.gguf").string();
  std::ofstream(junk) << "this is not a GGUF file, just some text to read";
  EXPECT_FAILS(trit_model_open(junk.c_str(), &o, &m), TRIT_ERROR_IO, junk);
  EXPECT_EQ(m, nullptr);

  o.device = "gpu7";
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "device 'gpu7'");
  o.device = "vulkan:x";
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "device 'vulkan:x'");
  o.device = "cpu";
  o.cache_type = "f8";
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "cache_type is 'f8'");
  o.cache_type = nullptr;
  o.threads = -2;
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "threads is -2");
  o.threads = 0;
  o.max_buffer_mb = -1;
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "max_buffer_mb is -1");
  o.max_buffer_mb = 0;
  o.mem_budget_mb = -5;
  EXPECT_FAILS(trit_model_open(model_path_.c_str(), &o, &m), TRIT_ERROR_INVALID_ARGUMENT,
               "mem_budget_mb is -5");
  EXPECT_EQ(m, nullptr);
}

TEST_F(CApi, TokenizeDetokenizeAndRenderChat) {
  ModelPtr m = open_model();
  int32_t* tokens = nullptr;
  size_t n = 0;
  ASSERT_EQ(trit_model_tokenize(m.get(), "Hello", true, true, &tokens, &n), TRIT_OK)
      << last_error();
  ASSERT_GE(n, 5u);
  Text text;
  size_t len = 0;
  const size_t skip = n > 5 ? 1 : 0;  // the bos token, when the tokenizer adds one
  ASSERT_EQ(trit_model_detokenize(m.get(), tokens + skip, n - skip, &text.p, &len), TRIT_OK);
  EXPECT_EQ(text.str(), "Hello");
  EXPECT_EQ(len, 5u);
  trit_tokens_free(tokens);

  ASSERT_EQ(trit_model_tokenize(m.get(), "", false, true, &tokens, &n), TRIT_OK);
  EXPECT_EQ(n, 0u);
  trit_tokens_free(tokens);

  const int32_t bad[] = {72, 9999};
  Text none;
  EXPECT_FAILS(trit_model_detokenize(m.get(), bad, 2, &none.p, nullptr),
               TRIT_ERROR_INVALID_ARGUMENT, "token id 9999");
  EXPECT_EQ(none.p, nullptr);
  EXPECT_FAILS(trit_model_detokenize(m.get(), nullptr, 3, &none.p, nullptr),
               TRIT_ERROR_INVALID_ARGUMENT, "tokens is NULL with 3 elements");
  EXPECT_FAILS(trit_model_tokenize(m.get(), nullptr, true, true, &tokens, &n),
               TRIT_ERROR_INVALID_ARGUMENT, "text is NULL");

  const trit_chat_message chat[] = {{"system", "Be brief."}, {"user", "Hi"}};
  Text rendered;
  ASSERT_EQ(trit_model_render_chat(m.get(), chat, 2, true, nullptr, &rendered.p), TRIT_OK);
  EXPECT_NE(rendered.str().find("Be brief."), std::string::npos) << rendered.str();
  EXPECT_EQ(rendered.str().substr(rendered.str().size() - 11), "Assistant: ") << rendered.str();
  Text other;
  ASSERT_EQ(trit_model_render_chat(m.get(), chat, 2, false, "chatml", &other.p), TRIT_OK);
  EXPECT_NE(other.str().find("<|im_start|>user\nHi<|im_end|>"), std::string::npos) << other.str();
  EXPECT_EQ(other.str().find("<|im_start|>assistant"), std::string::npos) << other.str();
  Text bad_template;
  EXPECT_FAILS(trit_model_render_chat(m.get(), chat, 2, true, "nope", &bad_template.p),
               TRIT_ERROR_INVALID_ARGUMENT, "nope");
  const trit_chat_message no_role[] = {{nullptr, "x"}};
  EXPECT_FAILS(trit_model_render_chat(m.get(), no_role, 1, true, nullptr, &bad_template.p),
               TRIT_ERROR_INVALID_ARGUMENT, "messages[0].role is NULL");
}

// ---- sessions ----

// The penalties and the logit bias reach the sampler: a presence penalty far above any logit's
// lead keeps every generated token off the tokens before it (prompt and output: repeat_last_n
// -1), where plain greedy generation repeats some; banned tokens never come.
TEST_F(CApi, PenaltiesAndLogitBiasReachTheSampler) {
  ModelPtr m = open_model();
  SessionPtr s = make_session(m.get(), 128);
  trit_generate_options g = trit_generate_options_default();
  g.max_tokens = 40;
  g.ignore_eos = true;
  g.sampling.temperature = 0;
  auto repeats = [](const trit_generate_result& r) {
    std::vector<int32_t> t(r.tokens, r.tokens + r.n_tokens);
    std::sort(t.begin(), t.end());
    return std::adjacent_find(t.begin(), t.end()) != t.end();
  };
  trit_generate_result r;
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  ASSERT_EQ(r.n_tokens, 40u);
  EXPECT_TRUE(repeats(r));
  g.sampling.presence_penalty = 1000.0f;
  g.sampling.repeat_last_n = -1;
  trit_session_reset(s.get());
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  ASSERT_EQ(r.n_tokens, 40u);
  EXPECT_FALSE(repeats(r));

  // A logit bias of -infinity on every token of that text keeps them all out of the next.
  std::vector<trit_logit_bias> bans;
  for (size_t i = 0; i < r.n_tokens; ++i) bans.push_back({r.tokens[i], -INFINITY});
  const std::vector<int32_t> before(r.tokens, r.tokens + r.n_tokens);
  g.sampling.presence_penalty = 0;
  g.sampling.logit_bias = bans.data();
  g.sampling.n_logit_bias = bans.size();
  trit_session_reset(s.get());
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  for (size_t i = 0; i < r.n_tokens; ++i) {
    EXPECT_EQ(std::find(before.begin(), before.end(), r.tokens[i]), before.end()) << i;
  }
  // A token outside the vocabulary, or a count without an array, is an invalid argument.
  const trit_logit_bias outside[] = {{1 << 20, 1.0f}};
  g.sampling.logit_bias = outside;
  g.sampling.n_logit_bias = 1;
  EXPECT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("logit_bias: token 1048576 is outside"), std::string::npos)
      << last_error();
  g.sampling.logit_bias = nullptr;
  EXPECT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("options.sampling.logit_bias"), std::string::npos) << last_error();
}

// logprobs: each token's, and the likeliest tokens' beside it, as the C++ API gives them.
TEST_F(CApi, LogprobsAreTheCppApis) {
  ModelPtr m = open_model();
  SessionPtr s = make_session(m.get(), 128);
  trit_generate_options g = trit_generate_options_default();
  EXPECT_EQ(g.logprobs, -1);
  g.max_tokens = 10;
  g.ignore_eos = true;
  g.sampling.temperature = 0;
  trit_generate_result r;
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  EXPECT_EQ(r.logprobs, nullptr);
  EXPECT_EQ(r.top, nullptr);
  EXPECT_EQ(r.n_top, 0u);
  g.logprobs = 3;
  trit_session_reset(s.get());
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  ASSERT_NE(r.logprobs, nullptr);
  ASSERT_NE(r.top, nullptr);
  ASSERT_EQ(r.n_top, 3u);

  trit::ModelOptions mo;
  mo.device = "cpu";
  mo.threads = 2;
  trit::Model model = trit::Model::open(model_path_, mo);
  trit::Session session(model, {128, 64});
  trit::GenerateOptions cg;
  cg.max_tokens = 10;
  cg.ignore_eos = true;
  cg.sampling.temperature = 0;
  cg.logprobs = 3;
  const trit::GenerateResult want = session.generate("Once upon", cg);
  ASSERT_EQ(r.n_tokens, want.logprobs.size());
  for (size_t i = 0; i < r.n_tokens; ++i) {
    EXPECT_EQ(r.logprobs[i], want.logprobs[i].logprob) << i;
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(r.top[i * 3 + k].token, want.logprobs[i].top[k].first) << i << " " << k;
      EXPECT_EQ(r.top[i * 3 + k].logprob, want.logprobs[i].top[k].second) << i << " " << k;
    }
    EXPECT_EQ(r.top[i * 3].token, r.tokens[i]);  // greedy: the likeliest
  }
  g.logprobs = 21;
  EXPECT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("logprobs: 21"), std::string::npos) << last_error();
}

TEST_F(CApi, GenerateStreamsTheResultsText) {
  ModelPtr m = open_model();
  SessionPtr s = make_session(m.get(), 128);
  EXPECT_EQ(trit_session_n_ctx(s.get()), 128);
  std::string streamed;
  trit_generate_options g = trit_generate_options_default();
  g.max_tokens = 12;
  g.ignore_eos = true;
  g.sampling.temperature = 0;
  g.user = &streamed;
  g.on_text = [](const char* text, size_t len, void* user) {
    EXPECT_EQ(text[len], '\0');
    static_cast<std::string*>(user)->append(text, len);
    return 1;
  };
  trit_generate_result r;
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  EXPECT_EQ(r.stop_reason, TRIT_STOP_MAX_TOKENS);
  EXPECT_EQ(r.n_generated, 12);
  EXPECT_EQ(r.n_tokens, 12u);
  EXPECT_EQ(std::string(r.text, r.text_len), streamed);
  EXPECT_GE(r.n_prompt, 9);
  // The cache holds the prompt and the generated tokens (the last one is fed by the next call).
  EXPECT_GE(trit_session_n_past(s.get()), r.n_prompt + 11);
  EXPECT_LE(trit_session_n_past(s.get()), r.n_prompt + 12);
  const std::string greedy(r.text, r.text_len);

  // The same again, from an empty cache, ends at a stop string taken from that text.
  trit_session_reset(s.get());
  EXPECT_EQ(trit_session_n_past(s.get()), 0);
  ASSERT_GE(greedy.size(), 4u);
  const std::string stop = greedy.substr(greedy.size() / 2, 2);
  const char* stops[] = {stop.c_str()};
  g.stop = stops;
  g.n_stop = 1;
  streamed.clear();
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK) << last_error();
  EXPECT_EQ(r.stop_reason, TRIT_STOP_STRING);
  EXPECT_EQ(std::string(r.text), greedy.substr(0, greedy.find(stop)));
  EXPECT_EQ(streamed, std::string(r.text));

  // A callback that returns 0 stops it.
  g.n_stop = 0;
  g.on_text = [](const char*, size_t, void*) { return 0; };
  trit_session_reset(s.get());
  ASSERT_EQ(trit_session_generate(s.get(), "Once upon", &g, &r), TRIT_OK);
  EXPECT_EQ(r.stop_reason, TRIT_STOP_CALLBACK);
  EXPECT_LT(r.n_generated, 12);

  // With the default options (NULL) and no result wanted.
  EXPECT_EQ(trit_session_generate(s.get(), " and", nullptr, nullptr), TRIT_OK) << last_error();
}

TEST_F(CApi, GenerateErrors) {
  ModelPtr m = open_model();
  SessionPtr s = make_session(m.get(), 16);
  trit_generate_options g = trit_generate_options_default();
  trit_generate_result r;
  EXPECT_FAILS(trit_session_generate(s.get(), nullptr, &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "prompt is NULL");
  const std::string long_prompt(64, 'a');
  EXPECT_FAILS(trit_session_generate(s.get(), long_prompt.c_str(), &g, &r),
               TRIT_ERROR_INVALID_ARGUMENT, "does not fit the session's context of 16");
  g.n_stop = 2;
  EXPECT_FAILS(trit_session_generate(s.get(), "a", &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "options.stop is NULL with 2 elements");
  const char* stops[] = {"x", nullptr};
  g.stop = stops;
  EXPECT_FAILS(trit_session_generate(s.get(), "a", &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "options.stop[1] is NULL");
  g = trit_generate_options_default();
  g.n_adapters = 1;
  EXPECT_FAILS(trit_session_generate(s.get(), "a", &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "options.adapters is NULL");
  const trit_adapter_scale empty = {nullptr, 1.0f};
  g.adapters = &empty;
  EXPECT_FAILS(trit_session_generate(s.get(), "a", &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "options.adapters[0].adapter is NULL");
  EXPECT_EQ(r.text, nullptr);  // a failed call leaves an empty result

  trit_session* bad = nullptr;
  trit_session_options so = trit_session_options_default();
  so.n_batch = 0;
  EXPECT_FAILS(trit_session_create(m.get(), &so, &bad), TRIT_ERROR_INVALID_ARGUMENT, "n_batch");
  so = trit_session_options_default();
  so.n_ctx = -5;
  EXPECT_FAILS(trit_session_create(m.get(), &so, &bad), TRIT_ERROR_INVALID_ARGUMENT, "n_ctx");
  EXPECT_EQ(bad, nullptr);
}

TEST_F(CApi, ChatReusesTheCacheTurnByTurn) {
  ModelPtr m = open_model();
  SessionPtr s = make_session(m.get());
  trit_generate_options g = trit_generate_options_default();
  g.max_tokens = 8;
  g.sampling.seed = 3;
  std::vector<trit_chat_message> chat = {{"user", "Good morning"}};
  trit_generate_result r;
  ASSERT_EQ(trit_session_chat(s.get(), chat.data(), chat.size(), &g, &r), TRIT_OK) << last_error();
  EXPECT_EQ(r.n_cached, 0);
  const std::string first(r.text, r.text_len);
  chat.push_back({"assistant", first.c_str()});
  chat.push_back({"user", "And then?"});
  ASSERT_EQ(trit_session_chat(s.get(), chat.data(), chat.size(), &g, &r), TRIT_OK) << last_error();
  EXPECT_GT(r.n_cached, 5);  // the first turn came from the cache
  EXPECT_LT(r.n_cached, r.n_prompt);
  // A built-in template by name; a bad name is an invalid argument naming it.
  g.chat_template = "llama3";
  EXPECT_EQ(trit_session_chat(s.get(), chat.data(), chat.size(), &g, &r), TRIT_OK) << last_error();
  g.chat_template = "nope";
  EXPECT_FAILS(trit_session_chat(s.get(), chat.data(), chat.size(), &g, &r),
               TRIT_ERROR_INVALID_ARGUMENT, "nope");
  EXPECT_FAILS(trit_session_chat(s.get(), nullptr, 2, &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "messages is NULL with 2 elements");
  const trit_chat_message no_content[] = {{"user", nullptr}};
  EXPECT_FAILS(trit_session_chat(s.get(), no_content, 1, &g, &r), TRIT_ERROR_INVALID_ARGUMENT,
               "messages[0].content is NULL");
}

TEST_F(CApi, CancelFromAnotherThreadStopsALongGeneration) {
  ModelPtr m = open_model();
  SessionPtr s = make_session(m.get(), 512);
  // The third piece waits until the other thread has cancelled, so the cancel lands mid-way
  // whatever the machine's speed.
  struct Shared {
    std::atomic<int> pieces{0};
    std::atomic<bool> cancelled{false};
  } shared;
  trit_generate_options g = trit_generate_options_default();
  g.max_tokens = -1;  // to the end of the context (500 tokens) unless cancelled
  g.ignore_eos = true;
  g.user = &shared;
  g.on_text = [](const char*, size_t, void* user) {
    Shared& s = *static_cast<Shared*>(user);
    if (++s.pieces == 3) {
      while (!s.cancelled.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return 1;
  };
  std::thread canceller([&] {
    while (shared.pieces.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    trit_session_cancel(s.get());
    shared.cancelled = true;
  });
  trit_generate_result r;
  const trit_status st = trit_session_generate(s.get(), "It was", &g, &r);
  canceller.join();
  ASSERT_EQ(st, TRIT_OK) << last_error();
  EXPECT_EQ(r.stop_reason, TRIT_STOP_CANCELLED);
  EXPECT_GE(r.n_generated, 3);
  EXPECT_LT(r.n_generated, 20);  // it ended at the token after the third piece

  // The cancel ended that call only: the next one runs.
  g.max_tokens = 4;
  g.on_text = nullptr;
  ASSERT_EQ(trit_session_generate(s.get(), " more", &g, &r), TRIT_OK);
  EXPECT_EQ(r.stop_reason, TRIT_STOP_MAX_TOKENS);
  // A cancel before a call ends that call at once.
  trit_session_cancel(s.get());
  ASSERT_EQ(trit_session_generate(s.get(), " more", &g, &r), TRIT_OK);
  EXPECT_EQ(r.stop_reason, TRIT_STOP_CANCELLED);
  EXPECT_EQ(r.n_tokens, 0u);
}

// ---- training, adapters, evaluation ----

TEST_F(CApi, TrainLoadAdapterGenerateAndEvaluate) {
  ModelPtr m = open_model();
  const std::string out = (dir_ / "train_once.gguf").string();
  trit_train_options o = train_options(out);
  struct Seen {
    int steps = 0, messages = 0;
    std::string last_line;
  } seen;
  o.user = &seen;
  o.on_progress = [](const trit_train_progress* p, void* user) {
    Seen& s = *static_cast<Seen*>(user);
    if (p->kind == TRIT_TRAIN_STEP) {
      ++s.steps;
      EXPECT_EQ(p->total_steps, 3);
      EXPECT_TRUE(std::isfinite(p->loss));
      s.last_line = p->line;
    } else if (p->kind == TRIT_TRAIN_MESSAGE) {
      ++s.messages;
    }
  };
  trit_trainer* t = nullptr;
  ASSERT_EQ(trit_trainer_create(m.get(), &o, &t), TRIT_OK) << last_error();
  TrainerPtr trainer(t);
  trit_train_result r;
  ASSERT_EQ(trit_trainer_run(t, &r), TRIT_OK) << last_error();
  EXPECT_EQ(r.steps_done, 3);
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(seen.steps, 3);
  EXPECT_GE(seen.messages, 1);  // the device line
  EXPECT_NE(seen.last_line.find("step 3/3"), std::string::npos) << seen.last_line;
  EXPECT_EQ(std::string(r.adapter_path), out);
  EXPECT_TRUE(fs::exists(out));
  EXPECT_TRUE(fs::exists(r.metrics_path)) << r.metrics_path;

  // The adapter, loaded once and applied to a call with a scale.
  trit_adapter* a = nullptr;
  ASSERT_EQ(trit_model_load_adapter(m.get(), out.c_str(), &a), TRIT_OK) << last_error();
  EXPECT_EQ(std::string(trit_adapter_path(a)), out);
  EXPECT_NE(std::string(trit_adapter_summary(a)).find("rank 4"), std::string::npos)
      << trit_adapter_summary(a);
  SessionPtr s = make_session(m.get(), 128);
  const trit_adapter_scale use = {a, 2.0f};
  trit_generate_options g = trit_generate_options_default();
  g.max_tokens = 4;
  g.adapters = &use;
  g.n_adapters = 1;
  g.sampling.temperature = 0;
  trit_generate_result gr;
  ASSERT_EQ(trit_session_generate(s.get(), "Surname first: Al Bo\nAnswer:", &g, &gr), TRIT_OK)
      << last_error();
  const std::string adapted_text(gr.text, gr.text_len);
  const int64_t adapted_prompt = gr.n_prompt;  // with the bos token
  // A session that ran without the adapter starts afresh with it, as a new session would.
  SessionPtr s2 = make_session(m.get(), 128);
  trit_generate_options plain = g;
  plain.n_adapters = 0;
  ASSERT_EQ(trit_session_generate(s2.get(), "Something else", &plain, &gr), TRIT_OK);
  ASSERT_EQ(trit_session_generate(s2.get(), "Surname first: Al Bo\nAnswer:", &g, &gr), TRIT_OK)
      << last_error();
  EXPECT_EQ(std::string(gr.text, gr.text_len), adapted_text);
  EXPECT_EQ(gr.n_prompt, adapted_prompt);
  EXPECT_EQ(gr.n_cached, 0);

  // An adapter of another model is refused by name.
  ModelPtr other = open_model();
  trit_adapter* foreign = nullptr;
  ASSERT_EQ(trit_model_load_adapter(other.get(), out.c_str(), &foreign), TRIT_OK);
  const trit_adapter_scale wrong = {foreign, 1.0f};
  g.adapters = &wrong;
  EXPECT_FAILS(trit_session_generate(s.get(), "x", &g, &gr), TRIT_ERROR_INVALID_ARGUMENT,
               "another model");

  // Evaluation with and without it.
  const std::string test = data_dir_ + "/test.jsonl";
  trit_eval_options eo = trit_eval_options_default();
  eo.ctx = 48;
  eo.mask_prompt = true;
  eo.max_new = 6;
  int64_t progress_calls = 0;
  eo.user = &progress_calls;
  eo.on_progress = [](const char* phase, int64_t done, int64_t total, void* user) {
    EXPECT_TRUE(std::string(phase) == "loss" || std::string(phase) == "exact match") << phase;
    EXPECT_LE(done, total);
    ++*static_cast<int64_t*>(user);
  };
  trit_eval_result er;
  ASSERT_EQ(trit_evaluate(m.get(), test.c_str(), &eo, &er), TRIT_OK) << last_error();
  EXPECT_STREQ(er.kind, "completions");
  EXPECT_EQ(er.n_examples, 6);
  EXPECT_GT(er.n_targets, 0);
  EXPECT_TRUE(std::isfinite(er.loss));
  EXPECT_NEAR(er.perplexity, std::exp(er.loss), 1e-6 * er.perplexity);
  EXPECT_TRUE(er.has_exact_match);
  EXPECT_EQ(er.exact_scored, 6);
  EXPECT_GT(progress_calls, 0);
  const trit_adapter_scale adapted = {a, 1.0f};
  eo.adapters = &adapted;
  eo.n_adapters = 1;
  eo.on_progress = nullptr;
  trit_eval_result er2;
  ASSERT_EQ(trit_evaluate(m.get(), test.c_str(), &eo, &er2), TRIT_OK) << last_error();
  EXPECT_NE(er2.loss, er.loss);
}

TEST_F(CApi, TrainerAndAdapterErrors) {
  ModelPtr m = open_model();
  const std::string out = (dir_ / "bad.gguf").string();
  trit_train_options o = train_options(out);
  trit_trainer* t = nullptr;
  o.rank = 0;
  EXPECT_FAILS(trit_trainer_create(m.get(), &o, &t), TRIT_ERROR_INVALID_ARGUMENT,
               "rank must be positive");
  o = train_options(out);
  o.lr = -1;
  EXPECT_FAILS(trit_trainer_create(m.get(), &o, &t), TRIT_ERROR_INVALID_ARGUMENT, "lr");
  EXPECT_FAILS(trit_trainer_create(m.get(), nullptr, &t), TRIT_ERROR_INVALID_ARGUMENT,
               "options is NULL");
  EXPECT_EQ(t, nullptr);

  // A missing data folder is found by the run, which names it.
  o = train_options(out);
  const std::string missing = (dir_ / "no_data").string();
  o.data = missing.c_str();
  ASSERT_EQ(trit_trainer_create(m.get(), &o, &t), TRIT_OK) << last_error();
  TrainerPtr trainer(t);
  trit_train_result r;
  EXPECT_FAILS(trit_trainer_run(t, &r), TRIT_ERROR_IO, missing);
  EXPECT_FALSE(fs::exists(out));

  trit_adapter* a = nullptr;
  const std::string no_adapter = (dir_ / "no_adapter.gguf").string();
  EXPECT_FAILS(trit_model_load_adapter(m.get(), no_adapter.c_str(), &a), TRIT_ERROR_IO, no_adapter);
  EXPECT_FAILS(trit_model_load_adapter(m.get(), model_path_.c_str(), &a), TRIT_ERROR_IO,
               model_path_);
  EXPECT_FAILS(trit_model_load_adapter(m.get(), nullptr, &a), TRIT_ERROR_INVALID_ARGUMENT,
               "path is NULL");
  EXPECT_EQ(a, nullptr);

  trit_eval_options eo = trit_eval_options_default();
  eo.ctx = 1;
  trit_eval_result er;
  const std::string test = data_dir_ + "/test.jsonl";
  EXPECT_FAILS(trit_evaluate(m.get(), test.c_str(), &eo, &er), TRIT_ERROR_INVALID_ARGUMENT,
               "ctx must be at least 2");
  const std::string no_file = (dir_ / "none.jsonl").string();
  EXPECT_FAILS(trit_evaluate(m.get(), no_file.c_str(), nullptr, &er), TRIT_ERROR_IO, no_file);
}

TEST_F(CApi, PauseResumeAndCancelFromAnotherThreadLeaveAResumableCheckpoint) {
  ModelPtr m = open_model();
  const std::string out = (dir_ / "cancelled.gguf").string();
  trit_train_options o = train_options(out);
  o.steps = 8;
  // The run's thread waits in its step callbacks until the control thread has acted, so that
  // each request lands between the same two steps whatever the machine's speed.
  struct Shared {
    std::atomic<int64_t> step{0};
    std::atomic<int64_t> released{0};  // the control thread has acted on this step
    std::atomic<int> checkpoints{0};
    int64_t first_step = -1;
    bool wait = true;
  } shared;
  o.user = &shared;
  o.on_progress = [](const trit_train_progress* p, void* user) {
    Shared& s = *static_cast<Shared*>(user);
    if (p->kind == TRIT_TRAIN_STEP) {
      if (s.first_step < 0) s.first_step = p->step;
      s.step = p->step;
      while (s.wait && (p->step == 1 || p->step == 3) && s.released.load() < p->step) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (p->kind == TRIT_TRAIN_CHECKPOINT) ++s.checkpoints;
  };
  trit_trainer* t = nullptr;
  ASSERT_EQ(trit_trainer_create(m.get(), &o, &t), TRIT_OK) << last_error();
  TrainerPtr trainer(t);
  // Another thread pauses the run after step 1, sees that it holds, resumes it, and cancels it
  // after step 3.
  int64_t after_hold = -1;
  std::thread control([&] {
    while (shared.step.load() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    trit_trainer_pause(t);
    shared.released = 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    after_hold = shared.step.load();
    trit_trainer_resume(t);
    while (shared.step.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    trit_trainer_cancel(t);
    shared.released = 3;
  });
  trit_train_result r;
  const trit_status st = trit_trainer_run(t, &r);
  control.join();
  ASSERT_EQ(st, TRIT_OK) << last_error();
  EXPECT_EQ(after_hold, 1);  // nothing ran while paused
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.steps_done, 3);
  ASSERT_STRNE(r.last_checkpoint, "");
  EXPECT_TRUE(fs::is_directory(r.last_checkpoint)) << r.last_checkpoint;
  EXPECT_EQ(shared.checkpoints.load(), 1);

  // A new trainer with the same options resumes from that checkpoint and finishes the run,
  // with the adapter an uninterrupted run makes.
  shared.first_step = -1;
  shared.wait = false;
  o.resume = "latest";
  ASSERT_EQ(trit_trainer_create(m.get(), &o, &t), TRIT_OK) << last_error();
  trainer.reset(t);
  ASSERT_EQ(trit_trainer_run(t, &r), TRIT_OK) << last_error();
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.steps_done, 8);
  EXPECT_EQ(shared.first_step, 4);
  const std::string straight = (dir_ / "straight.gguf").string();
  trit_train_options o2 = train_options(straight);
  o2.steps = 8;
  ASSERT_EQ(trit_trainer_create(m.get(), &o2, &t), TRIT_OK) << last_error();
  trainer.reset(t);
  ASSERT_EQ(trit_trainer_run(t, nullptr), TRIT_OK) << last_error();
  const auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(out), bytes(straight));

  // A resume from a folder that holds no checkpoint names it.
  const std::string nowhere = (dir_ / "no_checkpoint").string();
  o.resume = nowhere.c_str();
  ASSERT_EQ(trit_trainer_create(m.get(), &o, &t), TRIT_OK) << last_error();
  trainer.reset(t);
  EXPECT_FAILS(trit_trainer_run(t, &r), TRIT_ERROR_IO, nowhere);
}

// ---- devices and tools ----

TEST_F(CApi, Devices) {
  trit_device_info* devices = nullptr;
  size_t n = 0;
  ASSERT_EQ(trit_list_devices(&devices, &n), TRIT_OK) << last_error();
  ASSERT_GE(n, 1u);
  EXPECT_STREQ(devices[0].name, "cpu");
  EXPECT_STREQ(devices[0].kind, "cpu");
  EXPECT_FALSE(devices[0].real_gpu);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_NE(devices[i].description, nullptr);
    EXPECT_NE(devices[i].features, nullptr);
  }
  trit_devices_free(devices);
  Text report;
  ASSERT_EQ(trit_devices_report(&report.p), TRIT_OK);
  EXPECT_FALSE(report.str().empty());
}

TEST_F(CApi, Tools) {
  // create: errors name the option or the file.
  trit_create_options co = trit_create_options_default();
  const std::string made = (dir_ / "made.gguf").string();
  Text summary;
  EXPECT_FAILS(trit_create_model(made.c_str(), &co, &summary.p), TRIT_ERROR_INVALID_ARGUMENT,
               "preset");
  co.preset = "huge";
  EXPECT_FAILS(trit_create_model(made.c_str(), &co, &summary.p), TRIT_ERROR_INVALID_ARGUMENT,
               "unknown preset 'huge'");
  co.preset = "tiny";
  co.type = "q4_0";
  EXPECT_FAILS(trit_create_model(made.c_str(), &co, &summary.p), TRIT_ERROR_INVALID_ARGUMENT,
               "'q4_0'");
  co.type = nullptr;  // the default
  const std::string unwritable = (dir_ / "no_dir" / "m.gguf").string();
  EXPECT_FAILS(trit_create_model(unwritable.c_str(), &co, &summary.p), TRIT_ERROR_IO, unwritable);
  EXPECT_FAILS(trit_create_model(nullptr, &co, &summary.p), TRIT_ERROR_INVALID_ARGUMENT,
               "output is NULL");
  EXPECT_EQ(summary.p, nullptr);

  // quantize
  const std::string q = (dir_ / "tq1.gguf").string();
  ASSERT_EQ(trit_quantize(model_path_.c_str(), q.c_str(), "tq1_0", &summary.p), TRIT_OK)
      << last_error();
  EXPECT_NE(summary.str().find("tq1_0"), std::string::npos) << summary.str();
  EXPECT_FAILS(trit_quantize(model_path_.c_str(), q.c_str(), "q4_0", nullptr),
               TRIT_ERROR_INVALID_ARGUMENT, "'q4_0'");
  const std::string none = (dir_ / "none.gguf").string();
  EXPECT_FAILS(trit_quantize(none.c_str(), q.c_str(), "tq1_0", nullptr), TRIT_ERROR_IO, none);

  // describe_file
  Text info;
  ASSERT_EQ(trit_describe_file(q.c_str(), false, false, &info.p), TRIT_OK) << last_error();
  EXPECT_NE(info.str().find("tq1_0"), std::string::npos) << info.str();
  Text json;
  ASSERT_EQ(trit_describe_file(q.c_str(), true, true, &json.p), TRIT_OK) << last_error();
  EXPECT_EQ(json.str().front(), '{');
  Text missing;
  EXPECT_FAILS(trit_describe_file(none.c_str(), false, false, &missing.p), TRIT_ERROR_IO, none);

  // An adapter to merge, export and convert back.
  const std::string adapter = (dir_ / "tools_adapter.gguf").string();
  {
    ModelPtr m = open_model();
    trit_train_options o = train_options(adapter);
    o.steps = 1;
    trit_trainer* t = nullptr;
    ASSERT_EQ(trit_trainer_create(m.get(), &o, &t), TRIT_OK) << last_error();
    TrainerPtr trainer(t);
    ASSERT_EQ(trit_trainer_run(t, nullptr), TRIT_OK) << last_error();
  }

  // merge
  const std::string merged = (dir_ / "merged.gguf").string();
  const std::string spec = adapter + ":0.5";
  const char* adapters[] = {spec.c_str()};
  trit_merge_options mo = trit_merge_options_default();
  mo.adapters = adapters;
  mo.n_adapters = 1;
  Text merge_summary;
  ASSERT_EQ(trit_merge(model_path_.c_str(), merged.c_str(), &mo, &merge_summary.p), TRIT_OK)
      << last_error();
  EXPECT_NE(merge_summary.str().find("wrote"), std::string::npos);
  mo.mode = "blend";
  EXPECT_FAILS(trit_merge(model_path_.c_str(), merged.c_str(), &mo, nullptr),
               TRIT_ERROR_INVALID_ARGUMENT, "'blend'");
  mo = trit_merge_options_default();
  EXPECT_FAILS(trit_merge(model_path_.c_str(), merged.c_str(), &mo, nullptr),
               TRIT_ERROR_INVALID_ARGUMENT, "no adapters");
  const std::string lost = (dir_ / "lost_adapter.gguf").string();
  const char* lost_adapters[] = {lost.c_str()};
  mo.adapters = lost_adapters;
  mo.n_adapters = 1;
  EXPECT_FAILS(trit_merge(model_path_.c_str(), merged.c_str(), &mo, nullptr), TRIT_ERROR_IO, lost);

  // export_peft, then convert the PEFT folder back, checked against the model.
  const std::string peft = (dir_ / "peft").string();
  Text export_summary;
  ASSERT_EQ(trit_export_peft(adapter.c_str(), peft.c_str(), &export_summary.p), TRIT_OK)
      << last_error();
  EXPECT_TRUE(fs::exists(fs::path(peft) / "adapter_config.json"));
  EXPECT_FAILS(trit_export_peft(lost.c_str(), peft.c_str(), nullptr), TRIT_ERROR_IO, lost);
  const std::string back = (dir_ / "back.gguf").string();
  trit_convert_options cv = trit_convert_options_default();
  cv.base = model_path_.c_str();
  Text convert_summary;
  ASSERT_EQ(trit_convert(peft.c_str(), back.c_str(), &cv, &convert_summary.p), TRIT_OK)
      << last_error();
  EXPECT_NE(convert_summary.str().find("LoRA adapter"), std::string::npos);
  cv.type = "q8_0";
  EXPECT_FAILS(trit_convert(peft.c_str(), back.c_str(), &cv, nullptr), TRIT_ERROR_INVALID_ARGUMENT,
               "'q8_0'");
  const std::string no_src = (dir_ / "no_hf_model").string();
  EXPECT_FAILS(trit_convert(no_src.c_str(), back.c_str(), nullptr, nullptr), TRIT_ERROR_IO, no_src);
  EXPECT_FAILS(trit_convert(nullptr, back.c_str(), nullptr, nullptr), TRIT_ERROR_INVALID_ARGUMENT,
               "source is NULL");
}

}  // namespace
