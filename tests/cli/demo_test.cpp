// The README's demo in a reduced form: the shipped model, the shipped task, fewer fine-tuning
// steps. Asserts what the demo claims: validation loss falls and exact match rises from near 0.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/cli.h"
#include "support/files.h"

namespace trit::engine {
namespace {

TEST(Demo, ReducedRunLearnsTheTask) {
  test::TempDir dir;
  const std::string root = std::string(TRIT_TEST_DATA) + "/../..";
  const std::string out = dir.file("demo");
  const std::string log = dir.file("log.txt");
  const std::string cmd = "cd " + test::shell_quote(root) +
                          " && ASAN_OPTIONS=detect_leaks=0 DEMO_STEPS=120 bash tools/demo_run.sh " +
                          test::shell_quote(TRIT_BIN) + " " + test::shell_quote(out) + " >" +
                          test::shell_quote(log) + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << test::read_file(log);

  const auto summary = nlohmann::json::parse(test::read_file(out + "/summary.json"));
  const double before = summary.at("exact_match_before").get<double>();
  const double after = summary.at("exact_match_after").get<double>();
  EXPECT_LE(before, 0.05) << test::read_file(log);
  EXPECT_GE(after, 0.3) << test::read_file(log);

  std::vector<double> val;
  std::ifstream metrics(out + "/adapter.metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss") && j.at("val_loss").is_number()) {
      val.push_back(j.at("val_loss").get<double>());
    }
  }
  ASSERT_GE(val.size(), 2u) << test::read_file(log);
  EXPECT_LT(val.back(), 0.5 * val.front())
      << "validation loss " << val.front() << " -> " << val.back();
}

}  // namespace
}  // namespace trit::engine
