// End-to-end fine-tuning on a small random model: it learns a task it could not do, resumes
// exactly after a stop request or a SIGKILL, and checks a resumed run's settings.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "backend/select.h"
#include "core/error.h"
#include "infer/session.h"
#include "io/adapter_gguf.h"
#include "model/llama_layout.h"
#include "model/lora_set.h"
#include "support/adapters.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/models.h"
#include "tokenizer/tokenizer.h"
#include "tools/create.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace trit::engine {
namespace {
namespace fs = std::filesystem;

class Finetune : public ::testing::Test {
 protected:
  void SetUp() override {
    test::create_model(dir_, "m.gguf", test::tiny_options(4));
    fs::create_directories(dir_.file("data"));
    std::mt19937 rng(1);
    auto word = [&] {
      std::string w;
      const int n = 3 + int(rng() % 5);
      for (int i = 0; i < n; ++i) w += char('a' + rng() % 26);
      return w;
    };
    for (auto [split, n] : {std::pair{"train", 48}, {"valid", 12}, {"test", 12}}) {
      std::ofstream f(dir_.file("data/" + std::string(split) + ".jsonl"));
      for (int i = 0; i < n; ++i) {
        const std::string w = word();
        f << R"({"prompt": "Is )" << w << R"( a word?", "completion": " yes!"})"
          << "\n";
        if (std::string(split) == "test") held_out_.push_back(w);
      }
    }
  }

  FinetuneOptions options(const std::string& out, int64_t steps) {
    FinetuneOptions o;
    o.data = dir_.file("data");
    o.out = out;
    o.steps = steps;
    o.batch = 4;
    o.lr = 3e-3;
    o.rank = 4;
    o.ctx = 64;
    o.mask_prompt = true;
    o.val_every = 0;
    return o;
  }

  // Fine-tunes the model (the test's own when empty) on the CPU with 2 threads (the Vulkan runs
  // are cli/vulkan_finetune_test.cpp); on_line gets every line the run reports.
  FinetuneResult run(const FinetuneOptions& o, const std::string& model = "",
                     const std::function<void(const std::string&)>& on_line = {},
                     const std::atomic<bool>* stop = nullptr) {
    const auto m = Model::load(model.empty() ? dir_.file("m.gguf") : model);
    ThreadPool pool(2);
    const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
    FinetuneControl control;
    if (on_line) control.on_event = [&](const FinetuneEvent& e) { on_line(e.line); };
    control.stop = stop;
    return finetune(*m, *cpu, o, control);
  }

  std::string greedy(const Model& m, const LoraAdapter* ad, const std::string& prompt, int n) {
    const Tokenizer& tok = *m.tokenizer();
    ThreadPool pool(2);
    const std::unique_ptr<Backend> cpu = make_cpu_backend(pool);
    std::vector<std::pair<const LoraAdapter*, float>> adapters;
    if (ad) adapters.emplace_back(ad, 1.0f);
    const test::AttachedLora lora = test::attach_lora(*cpu, m.hparams(), adapters);
    Session s(m, 64, *cpu, ForwardOptions{true, ad ? &lora.set : nullptr});
    std::vector<float> logits;
    std::vector<int32_t> ids = tok.encode(prompt, true, false);
    std::string out;
    for (int i = 0; i < n; ++i) {
      s.eval(ids, logits);
      const int32_t id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out += tok.token_to_piece(id);
      ids = {id};
    }
    return out;
  }

  // Held-out words for which greedy decoding answers " yes!".
  int answered_right(const Model& m, const LoraAdapter* ad) {
    int right = 0;
    for (const std::string& w : held_out_)
      right += greedy(m, ad, "Is " + w + " a word?", 5) == " yes!";
    return right;
  }

  test::TempDir dir_;
  std::vector<std::string> held_out_;
};

TEST_F(Finetune, LearnsATaskTheBaseCannotDo) {
  std::vector<std::string> lines;
  FinetuneOptions o = options(dir_.file("a.gguf"), 40);
  o.val_every = 20;
  const FinetuneResult r = run(o, "", [&](const std::string& l) { lines.push_back(l); });
  EXPECT_EQ(r.steps_done, 40);
  ASSERT_GE(lines.size(), 42u);
  const auto first = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.find("step 0/40 | val loss") != std::string::npos;
  });
  ASSERT_NE(first, lines.end()) << lines[0];
  const double first_val = std::stod(first->substr(first->find("val loss") + 9));
  EXPECT_LT(r.last_val_loss, 0.1 * first_val);
  auto model = Model::load(dir_.file("m.gguf"));
  const LoraAdapter ad = load_adapter_gguf(o.out);
  EXPECT_EQ(answered_right(*model, nullptr), 0);
  EXPECT_GE(answered_right(*model, &ad), int(held_out_.size()) - 1);
  // Metrics and the plot are next to the adapter.
  const std::string metrics = test::read_file(dir_.file("a.metrics.jsonl"));
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 40 + 3);  // steps + 3 validations
  EXPECT_EQ(test::read_file(dir_.file("a.loss.svg")).rfind("<svg", 0), 0u);
}

// A ternary Llama model (no sub-norms) learns the task as well: the same loop, its own block.
TEST_F(Finetune, LlamaArchitectureModelLearnsTheTask) {
  CreateOptions c = test::tiny_options(4);
  c.hp.arch = "llama";
  c.hp.act = Activation::Silu;
  const std::string llama = test::create_model(dir_, "llama.gguf", c);
  FinetuneOptions o = options(dir_.file("l.gguf"), 40);
  const FinetuneResult r = run(o, llama);
  EXPECT_EQ(r.steps_done, 40);
  auto model = Model::load(llama);
  LoraAdapter ad = load_adapter_gguf(o.out);
  EXPECT_EQ(ad.base_arch, "llama");
  adapter_rows_from_file(ad, model->hparams(), o.out);  // the file holds llama.cpp's q, k order
  EXPECT_EQ(answered_right(*model, nullptr), 0);
  EXPECT_GE(answered_right(*model, &ad), int(held_out_.size()) - 1);
}

TEST_F(Finetune, StopAndResumeGiveTheSameAdapterBytes) {
  FinetuneOptions o = options(dir_.file("straight.gguf"), 8);
  o.grad_accum = 2;
  o.dropout = 0.1f;
  o.schedule = "cosine";
  o.warmup = 2;
  run(o);

  o.out = dir_.file("resumed.gguf");
  std::atomic<bool> stop{false};
  const FinetuneResult first = run(
      o, "",
      [&](const std::string& l) {
        if (l.rfind("step 4/8", 0) == 0) stop = true;
      },
      &stop);
  EXPECT_TRUE(first.stopped);
  EXPECT_EQ(first.steps_done, 4);
  EXPECT_TRUE(fs::exists(dir_.file("resumed.checkpoints/checkpoint-4/state.json")));
  o.resume = "latest";
  const FinetuneResult second = run(o);
  EXPECT_EQ(second.steps_done, 8);
  EXPECT_EQ(test::read_file(dir_.file("straight.gguf")),
            test::read_file(dir_.file("resumed.gguf")));
  // The metrics of the resumed run continue the first: one line per step.
  const std::string m = test::read_file(dir_.file("resumed.metrics.jsonl"));
  EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 8 + 2);
}

// --resume latest passes over a damaged checkpoint (its checksum tells), says so, and resumes
// from the one before: the run still ends with the uninterrupted run's bytes.
TEST_F(Finetune, ResumeLatestPassesOverADamagedCheckpointAndSaysSo) {
  FinetuneOptions o = options(dir_.file("straight.gguf"), 6);
  run(o);
  o.out = dir_.file("resumed.gguf");
  o.save_every = 2;
  std::atomic<bool> stop{false};
  run(
      o, "",
      [&](const std::string& l) {
        if (l.rfind("step 4/6", 0) == 0) stop = true;
      },
      &stop);
  const std::string two = dir_.file("resumed.checkpoints/checkpoint-2");
  const std::string four = dir_.file("resumed.checkpoints/checkpoint-4");
  ASSERT_TRUE(fs::exists(four + "/optimizer.bin"));
  std::string bytes = test::read_file(four + "/optimizer.bin");
  bytes[bytes.size() / 2] = char(bytes[bytes.size() / 2] ^ 1);
  test::write_file(four + "/optimizer.bin", bytes);

  o.resume = "latest";
  std::string lines;
  run(o, "", [&](const std::string& l) { lines += l + "\n"; });
  EXPECT_NE(lines.find("warning: " + four +
                       "/optimizer.bin: its checksum does not match (the file is damaged); "
                       "trying an older checkpoint"),
            std::string::npos)
      << lines;
  EXPECT_NE(lines.find("resuming from " + two + " at step 2"), std::string::npos) << lines;
  EXPECT_EQ(test::read_file(dir_.file("straight.gguf")),
            test::read_file(dir_.file("resumed.gguf")));
  // A checkpoint named on its own is refused, naming the file (the resumed run wrote
  // checkpoint-4 again: damage it again).
  bytes = test::read_file(four + "/optimizer.bin");
  bytes[bytes.size() / 2] = char(bytes[bytes.size() / 2] ^ 1);
  test::write_file(four + "/optimizer.bin", bytes);
  o.resume = four;
  try {
    run(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(four + "/optimizer.bin: its checksum does not match"),
              std::string::npos)
        << e.what();
  }
}

// A resumed run keeps the checkpoint's settings, except the learning rate and the clipping norm
// (the way out of a run that diverged), whose change it reports.
TEST_F(Finetune, ResumeRefusesOtherSettingsButTheLearningRate) {
  FinetuneOptions o = options(dir_.file("a.gguf"), 4);
  o.save_every = 2;
  o.steps = 2;
  run(o);
  o.steps = 4;  // the schedule's length is a setting too
  o.resume = "latest";
  try {
    run(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("setting 'total_steps'"), std::string::npos) << e.what();
  }
  o.steps = 2;
  o.rank = 8;
  try {
    run(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("setting 'rank'"), std::string::npos) << e.what();
  }
  o.rank = 4;
  o.lr = 1e-3;
  std::string lines;
  run(o, "", [&](const std::string& l) { lines += l + "\n"; });
  EXPECT_NE(lines.find("resuming: lr changes from 0.003 to 0.001"), std::string::npos) << lines;
}

// A step whose loss or gradient is not finite (here: a learning rate that makes the first
// update overflow the next forward pass) is skipped and leaves the adapter as it was; after
// max_bad_steps of them in a row the run stops with an error and a checkpoint of that adapter.
TEST_F(Finetune, NonFiniteStepsAreSkippedAndTooManyInARowStopTheRun) {
  FinetuneOptions one = options(dir_.file("one.gguf"), 1);
  one.lr = 1e30;
  run(one);
  const LoraAdapter after_first = load_adapter_gguf(dir_.file("one.gguf"));

  FinetuneOptions o = options(dir_.file("a.gguf"), 12);
  o.lr = 1e30;
  o.max_bad_steps = 3;
  std::string lines;
  try {
    run(o, "", [&](const std::string& l) { lines += l + "\n"; });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stopped at step 4: 3 steps in a row had a non-finite"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NE(lines.find("warning: step 2: the loss is not finite; the step is skipped (1 in a row)"),
            std::string::npos)
      << lines;
  const std::string ckpt = dir_.file("a.checkpoints/checkpoint-4/adapter.gguf");
  ASSERT_TRUE(fs::exists(ckpt));
  const LoraAdapter saved = load_adapter_gguf(ckpt);
  ASSERT_EQ(saved.layers.size(), after_first.layers.size());
  for (const auto& [name, l] : after_first.layers) {
    EXPECT_EQ(saved.layers.at(name).a, l.a) << name;
    EXPECT_EQ(saved.layers.at(name).b, l.b) << name;
  }
  // The metrics hold the skipped steps' losses as null.
  const std::string m = test::read_file(dir_.file("a.metrics.jsonl"));
  EXPECT_NE(m.find(R"({"step":2,"epoch")"), std::string::npos);
  EXPECT_NE(m.find(R"("loss":null)"), std::string::npos) << m;

  // max_bad_steps 0: the run goes on to its end, every bad step skipped.
  o.out = dir_.file("b.gguf");
  o.steps = 5;
  o.max_bad_steps = 0;
  EXPECT_EQ(run(o).steps_done, 5);
  const LoraAdapter end = load_adapter_gguf(dir_.file("b.gguf"));
  for (const auto& [name, l] : after_first.layers) EXPECT_EQ(end.layers.at(name).b, l.b) << name;
}

// A checkpoint names the model by file name and size and the data by its tokens: a copy of
// both elsewhere (another device's) resumes it to the same bytes, other data does not, and a
// checkpoint written with absolute paths (before) still resumes.
TEST_F(Finetune, ResumeFollowsTheFilesNotTheirPaths) {
  FinetuneOptions o = options(dir_.file("a.gguf"), 4);
  run(o);
  const std::string want = test::read_file(dir_.file("a.gguf"));
  o.out = dir_.file("b.gguf");
  o.save_every = 2;
  run(o);
  const std::string ckpt = dir_.file("b.checkpoints/checkpoint-2");
  ASSERT_TRUE(fs::exists(ckpt + "/state.json"));
  fs::create_directories(dir_.file("elsewhere/data"));
  fs::copy(dir_.file("data"), dir_.file("elsewhere/data"), fs::copy_options::recursive);
  fs::copy_file(dir_.file("m.gguf"), dir_.file("elsewhere/m.gguf"));
  FinetuneOptions moved = o;
  moved.data = dir_.file("elsewhere/data");
  moved.out = dir_.file("elsewhere/c.gguf");
  moved.resume = ckpt;
  run(moved, dir_.file("elsewhere/m.gguf"));
  EXPECT_TRUE(test::read_file(dir_.file("elsewhere/c.gguf")) == want);

  // Other data: refused, naming the setting.
  std::ofstream(dir_.file("elsewhere/data/train.jsonl"), std::ios::app)
      << R"({"prompt": "one more", "completion": " row"})"
      << "\n";
  try {
    run(moved, dir_.file("elsewhere/m.gguf"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("setting 'data'"), std::string::npos) << e.what();
  }

  // A checkpoint of the path-naming format: the model's file name is compared, no more.
  nlohmann::json state = nlohmann::json::parse(test::read_file(ckpt + "/state.json"));
  state["settings"]["model"] = fs::absolute(dir_.file("m.gguf")).string();
  state["settings"]["data"] = fs::absolute(dir_.file("data")).string();
  state["settings"].erase("model_bytes");
  state.erase("digest");  // nor did those carry checksums
  state.erase("files");
  test::write_file(ckpt + "/state.json", state.dump(2));
  FinetuneOptions old = o;
  old.out = dir_.file("d.gguf");
  old.resume = ckpt;
  run(old);
  EXPECT_TRUE(test::read_file(dir_.file("d.gguf")) == want);
}

TEST_F(Finetune, RefusesMergedAndAttachedModels) {
  run(options(dir_.file("a.gguf"), 2));
  for (const std::string mode : {"attach", "float"}) {
    const std::string merged = dir_.file(mode + ".gguf");
    const test::RunResult r =
        test::run_trit(dir_, {"merge", "-m", dir_.file("m.gguf"), "--lora", dir_.file("a.gguf"),
                              "-o", merged, "--mode", mode});
    ASSERT_EQ(r.rc, 0) << r.err;
    try {
      run(options(dir_.file("b.gguf"), 2), merged);
      FAIL() << mode;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(merged), std::string::npos) << e.what();
    }
  }
}

// Runs `trit finetune` as a child process; returns its pid.

// `trit finetune` on the fixture's model and data (batch 4, lr 3e-3, rank 4, ctx 64, 2 threads,
// no validation) for `steps` steps, then `extra`.
std::vector<std::string> finetune_args(const test::TempDir& dir, int64_t steps,
                                       const std::vector<std::string>& extra) {
  std::vector<std::string> a = {"finetune",
                                "-m",
                                dir.file("m.gguf"),
                                "--data",
                                dir.file("data"),
                                "--steps",
                                cat(steps),
                                "--batch",
                                "4",
                                "--lr",
                                "3e-3",
                                "--rank",
                                "4",
                                "-c",
                                "64",
                                "-t",
                                "2",
                                "--val-every",
                                "0"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Starts `trit ARGS` with its stderr in log, under a file-size limit when one is given
// (RLIMIT_FSIZE, bytes: a write past it fails with EFBIG, as on a full disk).
pid_t spawn(const std::vector<std::string>& args, const std::string& log,
            rlim_t max_file_bytes = RLIM_INFINITY) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    if (max_file_bytes != RLIM_INFINITY) {
      const rlimit limit{max_file_bytes, max_file_bytes};
      setrlimit(RLIMIT_FSIZE, &limit);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(TRIT_BIN));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(TRIT_BIN, argv.data());
    _exit(127);
  }
  return pid;
}

int exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The disk fills (a file-size limit) while a checkpoint is written, then while the adapter is:
// each time a clear error naming what could not be written, no partial file left, the earlier
// checkpoint whole and an earlier adapter at the output path untouched; the run then resumes
// to the uninterrupted run's bytes.
TEST_F(Finetune, AFullDiskLosesNothingAndTheRunResumes) {
  auto with = [&](const std::vector<std::string>& extra) { return finetune_args(dir_, 4, extra); };
  ASSERT_EQ(exit_code(spawn(with({"-o", dir_.file("straight.gguf")}), dir_.file("s.log"))), 0)
      << test::read_file(dir_.file("s.log"));
  const std::string straight = test::read_file(dir_.file("straight.gguf"));

  // A run stopped after checkpoint-2: a whole run with checkpoints every 2 steps, its
  // checkpoint-4 and adapter removed (a 2-step run would be another run: steps is a setting).
  const std::string out = dir_.file("a.gguf");
  const std::string ckpt = dir_.file("a.checkpoints");
  ASSERT_EQ(exit_code(spawn(with({"-o", out, "--save-every", "2"}), dir_.file("a.log"))), 0);
  fs::remove_all(ckpt + "/checkpoint-4");
  fs::remove(out);
  const rlim_t limit = fs::file_size(ckpt + "/checkpoint-2/adapter.gguf") / 2;

  // The checkpoint at step 4 cannot be written.
  EXPECT_EQ(exit_code(spawn(with({"-o", out, "--save-every", "2", "--resume"}), dir_.file("b.log"),
                            limit)),
            1);
  const std::string b = test::read_file(dir_.file("b.log"));
  EXPECT_NE(b.find("trit: cannot write the checkpoint " + ckpt + "/checkpoint-4 ("),
            std::string::npos)
      << b;
  EXPECT_NE(b.find("File too large); the earlier checkpoints are as they were"), std::string::npos)
      << b;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(ckpt)) left.push_back(e.path().filename());
  EXPECT_EQ(left, std::vector<std::string>{"checkpoint-2"});
  EXPECT_EQ(checkpoint_damage(ckpt + "/checkpoint-2"), "");
  EXPECT_FALSE(fs::exists(out));

  // The adapter cannot be written (no checkpoints this time): an earlier file there stays.
  test::write_file(out, "an earlier adapter");
  EXPECT_EQ(exit_code(spawn(with({"-o", out, "--resume"}), dir_.file("c.log"), limit)), 1);
  const std::string c = test::read_file(dir_.file("c.log"));
  EXPECT_NE(c.find("trit: " + out + ": cannot write " + out + ".tmp: File too large"),
            std::string::npos)
      << c;
  EXPECT_EQ(test::read_file(out), "an earlier adapter");
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  // With room again, the run resumes from checkpoint-2 and ends as the uninterrupted one.
  ASSERT_EQ(exit_code(spawn(with({"-o", out, "--resume"}), dir_.file("d.log"))), 0)
      << test::read_file(dir_.file("d.log"));
  EXPECT_EQ(test::read_file(out), straight);
}

TEST_F(Finetune, SigkillAndSigintThenResumeFinishLikeAnUninterruptedRun) {
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--save-every", "2"});
    return finetune_args(dir_, 20, extra);
  };
  int status = 0;
  const pid_t straight = spawn(with({"-o", dir_.file("straight.gguf")}), dir_.file("s.log"));
  waitpid(straight, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::read_file(dir_.file("s.log"));

  for (int sig : {SIGKILL, SIGINT}) {
    const std::string out = dir_.file(cat("run", sig, ".gguf"));
    const std::string ckpt = dir_.file(cat("run", sig, ".checkpoints"));
    const pid_t pid = spawn(with({"-o", out}), dir_.file("k.log"));
    // Wait for the first checkpoint (however loaded the machine), then interrupt.
    for (int i = 0; i < 30000 && !fs::exists(ckpt + "/checkpoint-2"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_TRUE(fs::exists(ckpt + "/checkpoint-2")) << test::read_file(dir_.file("k.log"));
    kill(pid, sig);
    waitpid(pid, &status, 0);
    if (sig == SIGINT) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << test::read_file(dir_.file("k.log"));
    }
    const pid_t resumed = spawn(with({"-o", out, "--resume"}), dir_.file("r.log"));
    waitpid(resumed, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << test::read_file(dir_.file("r.log"));
    EXPECT_EQ(test::read_file(dir_.file("straight.gguf")), test::read_file(out))
        << "signal " << sig;
  }
}

// SIGKILL at ten moments drawn at random (a fixed seed) over one fine-tune that checkpoints
// every step: while it loads, or at a random point of a step 1 to 3 steps on (training or
// writing a checkpoint). After each kill the run resumes from its newest checkpoint (or starts
// again when there is none yet); the adapter it ends with equals an uninterrupted run's, byte
// for byte.
TEST_F(Finetune, TenSigkillsAtRandomMomentsThenResumeFinishLikeAnUninterruptedRun) {
  const int64_t steps = 24;
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--save-every", "1"});
    return finetune_args(dir_, steps, extra);
  };
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t straight = spawn(with({"-o", dir_.file("straight.gguf")}), dir_.file("s.log"));
  waitpid(straight, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::read_file(dir_.file("s.log"));
  const int64_t step_ms = std::max<int64_t>(
      1,
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
              .count() /
          steps);

  const std::string out = dir_.file("killed.gguf");
  const std::string ckpt = dir_.file("killed.checkpoints");
  std::mt19937 rng(20261205);
  auto draw = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  auto step_done = [&] {
    const std::string c = latest_checkpoint(ckpt);
    return c.empty() ? int64_t(0) : int64_t(std::stoll(fs::path(c).filename().string().substr(11)));
  };
  int killed_mid_run = 0;
  std::string story;  // each kill's moment and the step reached, for a failure's message
  std::set<int64_t> steps_seen;
  for (int k = 0; k < 10; ++k) {
    const int64_t before = step_done();
    const pid_t pid =
        spawn(before == 0 ? with({"-o", out}) : with({"-o", out, "--resume"}), dir_.file("k.log"));
    std::string when;
    if (draw(0, 3) == 0) {  // while it starts
      const int64_t ms = draw(1, 30);
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      when = cat(ms, " ms after the start");
    } else {  // within the step after a checkpoint 1 to 3 steps on
      const int64_t target = std::min(steps - 1, before + draw(1, 3));
      // (Until the run writes it, or ends: a run that failed is told by its status below.)
      bool ended = false;
      for (int i = 0; i < 60000 && step_done() < target && !ended; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ended = waitpid(pid, &status, WNOHANG) == pid;
      }
      const int64_t ms = draw(0, step_ms);
      if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      when = cat(ms, " ms after checkpoint-", target, ended ? " (the run had ended)" : "");
      if (ended) {
        story += cat("kill ", k + 1, " ", when, ": ", test::read_file(dir_.file("k.log")), "\n");
        steps_seen.insert(step_done());
        continue;
      }
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++killed_mid_run;
    steps_seen.insert(step_done());
    story += cat("kill ", k + 1, " ", when, ": newest checkpoint ", step_done(), "\n");
  }
  const pid_t last = spawn(with({"-o", out, "--resume"}), dir_.file("r.log"));
  waitpid(last, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::read_file(dir_.file("r.log"));
  EXPECT_EQ(test::read_file(dir_.file("straight.gguf")), test::read_file(out)) << story;
  EXPECT_GE(killed_mid_run, 9) << "the kills should land while the run is going\n" << story;
  EXPECT_GE(steps_seen.size(), 5u) << "the kills should spread over the run\n" << story;
}

}  // namespace
}  // namespace trit::engine
