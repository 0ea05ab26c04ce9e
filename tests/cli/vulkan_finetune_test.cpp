// `trit finetune --device vulkan` end to end, through the CLI, on a small random model (2 layers,
// its 2048 x 256 f32 tied head 2 MiB: pieces at --max-buffer-mb 1) with LoRA on every
// linear layer and the head: the per-step training losses and the validation losses follow the
// CPU run's; a run resumed from a checkpoint ends with the adapter bytes of an uninterrupted
// run; and a 1 MiB binding limit changes nothing (DESIGN section 6: the result with any limit
// equals the untiled result). Without a Vulkan device the tests skip, unless
// TRIT_REQUIRE_VULKAN=1 makes them fail. CTest runs the suite in one process
// (tests/CMakeLists.txt): the tests share their runs (each CLI run is made once per process).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/vulkan.h"
#include "train/metrics.h"

namespace trit::engine {
namespace {
namespace fs = std::filesystem;

// Marks the current test skipped (GTEST_SKIP returns from the function it is in).
void skip(const std::string& why) {
  GTEST_SKIP() << "no Vulkan device: " << why;
}

struct FinetuneRun {
  test::RunResult r;
  MetricsLog metrics;
  std::string adapter;  // the adapter's bytes
};

class VulkanFinetune : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    fs::create_directories(dir_->file("data"));
    std::mt19937 rng(1);
    auto word = [&] {
      std::string w;
      for (int i = 0, n = 3 + int(rng() % 5); i < n; ++i) w += char('a' + rng() % 26);
      return w;
    };
    // A small random model whose 2048 x 256 f32 head (2 MiB) splits at a 1 MiB limit, fast
    // enough on a CPU Vulkan driver (the head is most of a step's work there).
    const test::RunResult made = test::run_trit(
        *dir_, {"create", "--preset", "tiny", "--random", "--vocab", "2048", "--embd-type", "f32",
                "--seed", "3", "-o", dir_->file("model.gguf")});
    if (made.rc != 0) ADD_FAILURE() << "trit create failed: " << made.err;
    for (auto [split, n] : {std::pair{"train", 16}, {"valid", 4}}) {
      std::ofstream f(dir_->file("data/" + std::string(split) + ".jsonl"));
      for (int i = 0; i < n; ++i) {
        f << R"({"prompt": "Is )" << word() << R"( a word?", "completion": " yes!"})"
          << "\n";
      }
    }
  }
  static void TearDownTestSuite() {
    runs_.clear();
    delete dir_;
    dir_ = nullptr;
  }

  // 8 steps (unless extra gives --steps) of 2 sequences at lr 5e-4: the losses stay far from
  // 0, where a relative tolerance would mean little.
  static std::vector<std::string> args(const std::string& out, std::vector<std::string> extra) {
    const bool steps = std::find(extra.begin(), extra.end(), "--steps") != extra.end();
    // clang-format off
    std::vector<std::string> a = {
        "finetune", "-m", dir_->file("model.gguf"), "--data",
        dir_->file("data"), "-o", dir_->file(out), "--batch", "2", "--lr", "5e-4",
        "--rank", "4", "--targets", "all,head", "-c", "64", "-t", "2", "--seed", "7",
        "--val-every", "4", "--mask-prompt"};
    // clang-format on
    if (!steps) a.insert(a.end(), {"--steps", "8"});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  // Runs `trit finetune` writing <out> (once per test suite for a given out) and reads its
  // metrics and adapter. On Vulkan without a device: skips (null), or fails under
  // TRIT_REQUIRE_VULKAN=1. Any other failure fails the test (null).
  static const FinetuneRun* finetune(const std::string& out,
                                     const std::vector<std::string>& extra) {
    auto it = runs_.find(out);
    if (it != runs_.end()) return &it->second;
    FinetuneRun run;
    run.r = test::run_trit(*dir_, args(out, extra));
    if (run.r.rc != 0) {
      if (test::says_no_device(run.r.err)) {
        if (test::vulkan_required()) {
          ADD_FAILURE() << "TRIT_REQUIRE_VULKAN=1: " << run.r.err;
          return nullptr;
        }
        skip(run.r.err);
        return nullptr;
      }
      ADD_FAILURE() << "trit finetune " << out << " failed (" << run.r.rc << "): " << run.r.err;
      return nullptr;
    }
    run.metrics = read_metrics(dir_->file(strip(out) + ".metrics.jsonl"));
    run.adapter = test::read_file(dir_->file(out));
    return &(runs_[out] = std::move(run));
  }
  static std::string strip(const std::string& out) { return out.substr(0, out.size() - 5); }

  static test::TempDir* dir_;
  static std::map<std::string, FinetuneRun> runs_;
};

test::TempDir* VulkanFinetune::dir_ = nullptr;
std::map<std::string, FinetuneRun> VulkanFinetune::runs_;

// Per step: |got - want| <= tol * |want|, for the training and the validation losses of a run
// of `steps` steps (validation every 4); prints the largest relative difference of each.
void expect_losses_close(const MetricsLog& want, const MetricsLog& got, double tol,
                         const std::string& what, size_t steps = 8) {
  ASSERT_EQ(got.train.size(), steps) << what;
  ASSERT_EQ(want.train.size(), steps) << what;
  ASSERT_EQ(got.val.size(), steps / 4 + 1) << what;  // steps 0, 4, 8, ...
  ASSERT_EQ(want.val.size(), steps / 4 + 1) << what;
  double worst_train = 0, worst_val = 0;
  for (size_t i = 0; i < want.train.size(); ++i) {
    const double w = want.train[i].loss, g = got.train[i].loss;
    const double rel = std::isfinite(g) ? std::fabs(g - w) / std::fabs(w) : INFINITY;
    worst_train = std::max(worst_train, rel);
    EXPECT_LE(rel, tol) << what << ": step " << want.train[i].step << " loss " << g
                        << ", the CPU's " << w;
  }
  for (size_t i = 0; i < want.val.size(); ++i) {
    const double w = want.val[i].val_loss, g = got.val[i].val_loss;
    const double rel = std::isfinite(g) ? std::fabs(g - w) / std::fabs(w) : INFINITY;
    worst_val = std::max(worst_val, rel);
    EXPECT_LE(rel, tol) << what << ": step " << want.val[i].step << " val loss " << g
                        << ", the CPU's " << w;
  }
  std::printf("%s: largest relative difference to the CPU: train loss %.3g, val loss %.3g\n",
              what.c_str(), worst_train, worst_val);
}

// W1.58A8: a last-bit difference before an activation quantiser flips an int8 rounding tie now
// and then, which moves a step's loss by up to ~1e-2 relative and the later steps with it.
TEST_F(VulkanFinetune, LossesFollowTheCpu) {
  const FinetuneRun* cpu = finetune("cpu.gguf", {"--device", "cpu"});
  if (!cpu) return;
  const FinetuneRun* vk = finetune("vk.gguf", {"--device", "vulkan"});
  if (!vk) return;
  expect_losses_close(cpu->metrics, vk->metrics, 2e-2, "vulkan W1.58A8");
}

// Float activations: no rounding ties, so only f32 summation order differs.
TEST_F(VulkanFinetune, FloatActivationsFollowTheCpuClosely) {
  const test::RunResult help = test::run_trit(*dir_, {"finetune", "--help"});
  if (help.out.find("--act-quant") == std::string::npos) {
    GTEST_SKIP() << "trit finetune has no --act-quant option";
  }
  const FinetuneRun* cpu = finetune("cpu_float.gguf", {"--device", "cpu", "--act-quant", "none"});
  if (!cpu) return;
  const FinetuneRun* vk = finetune("vk_float.gguf", {"--device", "vulkan", "--act-quant", "none"});
  if (!vk) return;
  expect_losses_close(cpu->metrics, vk->metrics, 1e-4, "vulkan float activations");
}

// The fast path of a device with f16 cooperative matrices (TRIT_VK_EXACT=0: the transposed
// products of the backward pass in halves, DESIGN section 2) against the CPU: float activations
// (no rounding ties) within 1e-3 of the CPU's losses, W1.58A8 within the 2e-2 above. Devices
// without such matrices (lavapipe) skip this.
TEST_F(VulkanFinetune, F16ProductsFollowTheCpu) {
  const FinetuneRun *vk_float = nullptr, *vk = nullptr;
  {
    const test::ScopedEnv fast("TRIT_VK_EXACT", "0");
    // Asked first, so that a device without them skips before any fine-tune runs.
    const test::RunResult devices = test::run_trit(*dir_, {"devices"});
    if (devices.out.find("transposed products: f16") == std::string::npos) {
      GTEST_SKIP() << "no f16 cooperative matrices on this device";
    }
    vk_float = finetune("vk_f16_float.gguf",
                        {"--device", "vulkan", "--act-quant", "none", "--steps", "20"});
    if (!vk_float) return;
    if (vk_float->r.err.find("f16 training products") == std::string::npos) {
      GTEST_SKIP() << "no f16 cooperative matrices on this device: " << vk_float->r.err;
    }
    vk = finetune("vk_f16.gguf", {"--device", "vulkan"});
    if (!vk) return;
  }
  // With float activations the losses follow the CPU's over 20 steps: within 3e-3 relative
  // (NVIDIA H200: at most 1.2e-3 train and 1.3e-3 validation, both at the 20th step, where the
  // loss has fallen to 0.13; within 1e-3 for the first 19).
  const FinetuneRun* cpu_float =
      finetune("cpu_float20.gguf", {"--device", "cpu", "--act-quant", "none", "--steps", "20"});
  if (!cpu_float) return;
  expect_losses_close(cpu_float->metrics, vk_float->metrics, 3e-3, "vulkan f16, float activations",
                      20);
  const FinetuneRun* cpu = finetune("cpu.gguf", {"--device", "cpu"});
  if (!cpu) return;
  expect_losses_close(cpu->metrics, vk->metrics, 2e-2, "vulkan f16 W1.58A8");
  // The adapter differs from the exact path's (or the fast path did not run).
  const FinetuneRun* exact =
      finetune("vk_float20.gguf", {"--device", "vulkan", "--act-quant", "none", "--steps", "20"});
  if (!exact) return;
  EXPECT_NE(exact->adapter, vk_float->adapter);
}

// Per step: the same training and validation losses, bit for bit.
void expect_same_losses(const MetricsLog& want, const MetricsLog& got, const std::string& what) {
  ASSERT_EQ(got.train.size(), want.train.size()) << what;
  for (size_t i = 0; i < want.train.size(); ++i) {
    EXPECT_EQ(got.train[i].loss, want.train[i].loss) << what << ": step " << want.train[i].step;
  }
  ASSERT_EQ(got.val.size(), want.val.size()) << what;
  for (size_t i = 0; i < want.val.size(); ++i) {
    EXPECT_EQ(got.val[i].val_loss, want.val[i].val_loss)
        << what << ": validation at step " << want.val[i].step;
  }
}

// With LoRA dropout 0.1 and a cosine schedule (as cli/finetune_test.cpp's resume test): the losses
// follow the CPU's (the dropout masks are the same). A run at --max-buffer-mb 1 (the head, 2 MiB,
// the activations of a step and the logits in pieces) that checkpoints every 4 steps gives the
// losses and the adapter of the run at the device's own limit, bit for bit (tiling changes no
// result, the device is deterministic); then, with its step-8 checkpoint and adapter gone (as if
// killed after step 4's checkpoint), --resume finishes with the same adapter bytes and losses.
// (One run serves both properties: a Vulkan fine-tune is most of this suite's time on a CPU
// Vulkan driver.)
TEST_F(VulkanFinetune, OneMiBLimitAndResumeGiveTheSameRun) {
  const std::vector<std::string> drop = {"--lora-dropout", "0.1",      "--schedule",
                                         "cosine",         "--warmup", "2"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), drop.begin(), drop.end());
    return extra;
  };
  const FinetuneRun* cpu = finetune("cpu_drop.gguf", with({"--device", "cpu"}));
  if (!cpu) return;
  const FinetuneRun* straight = finetune("vk_drop.gguf", with({"--device", "vulkan"}));
  if (!straight) return;
  expect_losses_close(cpu->metrics, straight->metrics, 2e-2, "vulkan W1.58A8 with dropout");
  const std::vector<std::string> saving =
      with({"--device", "vulkan", "--max-buffer-mb", "1", "--save-every", "4"});
  const FinetuneRun* saved = finetune("vk_saved.gguf", saving);
  if (!saved) return;
  expect_same_losses(straight->metrics, saved->metrics, "1 MiB limit, checkpointing");
  EXPECT_TRUE(saved->adapter == straight->adapter)
      << "the run at a 1 MiB limit that checkpoints gives another adapter";
  const std::string ckpt = dir_->file("vk_saved.checkpoints");
  ASSERT_TRUE(fs::exists(ckpt + "/checkpoint-4/state.json"));
  fs::remove_all(ckpt + "/checkpoint-8");
  fs::remove(dir_->file("vk_saved.gguf"));
  runs_.erase("vk_saved.gguf");
  std::vector<std::string> resume = saving;
  resume.push_back("--resume");
  const FinetuneRun* resumed = finetune("vk_saved.gguf", resume);
  if (!resumed) return;
  EXPECT_NE(resumed->r.err.find("resuming from"), std::string::npos) << resumed->r.err;
  EXPECT_TRUE(resumed->adapter == straight->adapter)
      << "the resumed Vulkan run's adapter differs from the uninterrupted run's";
  ASSERT_EQ(resumed->metrics.train.size(), straight->metrics.train.size());
  for (size_t i = 0; i < straight->metrics.train.size(); ++i) {
    EXPECT_EQ(resumed->metrics.train[i].loss, straight->metrics.train[i].loss) << "step " << i + 1;
  }
}

// Under a memory budget a fine-tune on a device streams the blocks through it (each block's
// weights uploaded for its pass and dropped after it): the same run, bit for bit.
TEST_F(VulkanFinetune, AMemoryBudgetStreamsTheBlocksWithTheSameRun) {
  const FinetuneRun* straight = finetune("vk.gguf", {"--device", "vulkan"});
  if (!straight) return;
  const FinetuneRun* streamed =
      finetune("vk_budget.gguf", {"--device", "vulkan", "--mem-budget", "500"});
  if (!streamed) return;
  expect_same_losses(straight->metrics, streamed->metrics, "--mem-budget 500");
  EXPECT_TRUE(streamed->adapter == straight->adapter)
      << "the run under a memory budget gives another adapter";
}

// Faults injected into the device (TRIT_VK_FAULT: the N-th queue submission of the process
// fails as the driver's error would). A lost device mid-run: the CLI opens it again and goes
// on from the newest checkpoint, ending with the uninterrupted run's adapter. Out of device
// memory mid-run: a checkpoint of the steps done and an error that names it; resumed, the run
// ends with the same adapter.
TEST_F(VulkanFinetune, ALostDeviceIsOpenedAgainAndOutOfMemoryLeavesACheckpoint) {
  const FinetuneRun* straight = finetune("vk.gguf", {"--device", "vulkan"});
  if (!straight) return;
  const test::RunResult lost =
      test::run_trit(*dir_, args("vk_lost.gguf", {"--device", "vulkan", "--save-every", "2"}),
                     "TRIT_VK_FAULT=lost@14");
  ASSERT_EQ(lost.rc, 0) << lost.err;
  EXPECT_NE(lost.err.find("VK_ERROR_DEVICE_LOST at step "), std::string::npos) << lost.err;
  EXPECT_NE(lost.err.find("trit: opening the device again to go on"), std::string::npos)
      << lost.err;
  EXPECT_NE(lost.err.find("resuming from " + dir_->file("vk_lost.checkpoints/checkpoint-")),
            std::string::npos)
      << lost.err;
  EXPECT_TRUE(test::read_file(dir_->file("vk_lost.gguf")) == straight->adapter)
      << "the run that lost its device ends with another adapter";

  const std::vector<std::string> oom_args = args("vk_oom.gguf", {"--device", "vulkan"});
  const test::RunResult oom = test::run_trit(*dir_, oom_args, "TRIT_VK_FAULT=oom@13");
  EXPECT_EQ(oom.rc, 1) << oom.err;
  EXPECT_NE(oom.err.find("VK_ERROR_OUT_OF_DEVICE_MEMORY at step "), std::string::npos) << oom.err;
  EXPECT_NE(oom.err.find(" holds the run up to step "), std::string::npos) << oom.err;
  EXPECT_FALSE(fs::exists(dir_->file("vk_oom.gguf")));
  std::vector<std::string> resume = oom_args;
  resume.push_back("--resume");
  const test::RunResult resumed = test::run_trit(*dir_, resume);
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  EXPECT_TRUE(test::read_file(dir_->file("vk_oom.gguf")) == straight->adapter)
      << "the run resumed after running out of device memory ends with another adapter";
}

}  // namespace
}  // namespace trit::engine
