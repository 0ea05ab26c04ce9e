// `mpirun -np N trit finetune`: data-parallel ranks over MPI, on the CPU. Two ranks that each
// take half of every batch train what one process trains with the whole batch; a run resumes
// from a checkpoint on another number of ranks; a rank that dies ends the job (no hang) with a
// checkpoint that resumes. Skipped where mpirun is not installed (tools/setup.sh installs it).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "support/api_models.h"
#include "support/cli.h"
#include "support/files.h"
#include "train/metrics.h"

namespace trit::engine {
namespace {

namespace fs = std::filesystem;

// mpirun as root (containers, CI) must be told; ranks beyond the cores are allowed; the
// sanitizer build's leak check would count MPI's own allocations at exit.
const char* kMpiEnv =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
    "ASAN_OPTIONS=detect_leaks=0";

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (test::run_shell("command -v mpirun").rc != 0) GTEST_SKIP() << "no mpirun on PATH";
  }
  std::vector<std::string> args(const std::string& out, int64_t steps,
                                std::vector<std::string> extra = {}, int batch = 4,
                                int val_every = 2) const {
    std::vector<std::string> a = {"finetune",
                                  "-m",
                                  api_test::kShipped,
                                  "--data",
                                  api_test::kDemoData,
                                  "-o",
                                  dir_.file(out),
                                  "--steps",
                                  std::to_string(steps),
                                  "--batch",
                                  std::to_string(batch),
                                  "-c",
                                  "40",
                                  "--rank",
                                  "4",
                                  "--lr",
                                  "1e-3",
                                  "--val-every",
                                  std::to_string(val_every),
                                  "--val-examples",
                                  "6",
                                  "--seed",
                                  "5",
                                  "-t",
                                  "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  test::ShellResult mpirun(int ranks, const std::vector<std::string>& a) const {
    return test::run_shell(std::string("env ") + kMpiEnv + " mpirun -np " + std::to_string(ranks) +
                           " " + test::trit_command(a));
  }
  MetricsLog metrics(const std::string& out) const {
    return read_metrics(dir_.file(out.substr(0, out.size() - 5) + ".metrics.jsonl"));
  }
  test::TempDir dir_;
};

void expect_close(const MetricsLog& a, const MetricsLog& b, double tol, const std::string& what) {
  ASSERT_EQ(a.train.size(), b.train.size()) << what;
  ASSERT_EQ(a.val.size(), b.val.size()) << what;
  for (size_t i = 0; i < a.train.size(); ++i) {
    EXPECT_NEAR(b.train[i].loss, a.train[i].loss, tol * a.train[i].loss) << what << " step " << i;
  }
  for (size_t i = 0; i < a.val.size(); ++i) {
    EXPECT_NEAR(b.val[i].val_loss, a.val[i].val_loss, tol * a.val[i].val_loss)
        << what << " val " << i;
  }
}

// The same steps on one rank and on two: the first step's loss and gradient norm (the sums of
// both halves, before any update) agree to float rounding; later losses drift by what AdamW
// makes of the rounding of gradient sums taken in another order. Only rank 0 reports and writes.
TEST_F(DataParallel, TwoRanksWithHalfBatchesTrainWhatOneRankTrains) {
  const test::RunResult one = test::run_trit(dir_, args("one.gguf", 4));
  ASSERT_EQ(one.rc, 0) << one.err;
  const test::ShellResult two = mpirun(2, args("two.gguf", 4));
  ASSERT_EQ(two.rc, 0) << two.output;
  const MetricsLog m1 = metrics("one.gguf"), m2 = metrics("two.gguf");
  ASSERT_EQ(m1.train.size(), 4u);
  EXPECT_NEAR(m2.train[0].loss, m1.train[0].loss, 1e-6 * m1.train[0].loss);
  EXPECT_NEAR(m2.train[0].grad_norm, m1.train[0].grad_norm, 1e-5 * m1.train[0].grad_norm);
  EXPECT_NEAR(m2.val[0].val_loss, m1.val[0].val_loss, 1e-6 * m1.val[0].val_loss);  // no step yet
  expect_close(m1, m2, 2e-3, "two ranks");
  EXPECT_TRUE(fs::exists(dir_.file("two.gguf")));
  size_t reports = 0;
  for (size_t p = 0; (p = two.output.find("adapter: ", p)) != std::string::npos; ++p) ++reports;
  EXPECT_EQ(reports, 1u) << two.output;
}

// Checkpointed at step 2 by two ranks, resumed on one: the run goes on with the same data
// order and global batch and ends where the two-rank run ends.
TEST_F(DataParallel, ARunResumesOnAnotherNumberOfRanks) {
  const test::ShellResult two = mpirun(2, args("two.gguf", 4, {"--save-every", "2"}));
  ASSERT_EQ(two.rc, 0) << two.output;
  const std::string ckpt = dir_.file("two.checkpoints");
  ASSERT_TRUE(fs::exists(ckpt + "/checkpoint-2/state.json"));
  fs::create_directories(dir_.file("resumed.checkpoints"));
  fs::copy(ckpt + "/checkpoint-2", dir_.file("resumed.checkpoints/checkpoint-2"));
  fs::copy_file(dir_.file("two.metrics.jsonl"), dir_.file("resumed.metrics.jsonl"));
  const test::RunResult one = test::run_trit(dir_, args("resumed.gguf", 4, {"--resume"}));
  ASSERT_EQ(one.rc, 0) << one.err;
  EXPECT_NE(one.err.find("resuming from"), std::string::npos) << one.err;
  expect_close(metrics("two.gguf"), metrics("resumed.gguf"), 2e-3, "resumed on one rank");
}

// Rank 1 is killed mid-run: mpirun ends the job (a bounded wait, not a hang), rank 0 leaves a
// checkpoint of the last whole step, and the run resumes from it on one rank to the end.
TEST_F(DataParallel, ARankThatDiesEndsTheJobWithACheckpoint) {
  const std::vector<std::string> a = args("die.gguf", 100, {}, 2, 0);
  // Rank 1's shell becomes trit (exec keeps its pid) and is killed half a second after the
  // first step's loss reaches the metrics (a fixed delay from the start could come before any
  // whole step on a loaded machine, leaving nothing to checkpoint; 60 s at most).
  const std::string metrics_file = test::shell_quote(dir_.file("die.metrics.jsonl"));
  const std::string rank1_dies =
      "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (i=0; while [ $i -lt 600 ] && ! grep -qs "
      "'\"loss\"' " +
      metrics_file + "; do sleep 0.1; i=$((i + 1)); done; sleep 0.5; kill -9 $$) & fi; exec " +
      test::trit_command(a);
  const test::ShellResult r =
      test::run_shell(std::string("env ") + kMpiEnv + " timeout 120 mpirun -np 2 sh -c " +
                      test::shell_quote(rank1_dies));
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_NE(r.rc, 124) << "the job hung: " << r.output;
  EXPECT_NE(r.output.find("data-parallel: rank 0 of 2 waited"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resume from it (--resume), with any number of ranks"), std::string::npos)
      << r.output;
  const std::string ckpt = dir_.file("die.checkpoints");
  ASSERT_TRUE(fs::exists(ckpt)) << r.output;
  std::vector<std::string> resume = a;
  resume.push_back("--resume");
  const test::RunResult whole = test::run_trit(dir_, resume);
  ASSERT_EQ(whole.rc, 0) << whole.err;
  EXPECT_NE(whole.err.find("resuming from " + ckpt + "/checkpoint-"), std::string::npos)
      << whole.err;
  EXPECT_TRUE(fs::exists(dir_.file("die.gguf")));
}

}  // namespace
}  // namespace trit::engine
