// Running the trit binary (TRIT_BIN, built with the tests) and shell commands, and the CLI's
// error contract: a failure prints one line on stderr, "trit: ...", and exits non-zero.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "support/files.h"

namespace trit::engine::test {

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The command line that runs trit with the arguments, each quoted.
inline std::string trit_command(const std::vector<std::string>& args) {
  std::string cmd = shell_quote(TRIT_BIN);
  for (const std::string& a : args) cmd += ' ' + shell_quote(a);
  return cmd;
}

struct RunResult {
  int rc = -1;
  std::string out, err;
};

// Runs the trit binary with the arguments (and environment assignments such as
// "ASAN_OPTIONS=detect_leaks=0", when given); stdout and stderr are captured in files of dir.
inline RunResult run_trit(const TempDir& dir, const std::vector<std::string>& args,
                          const std::string& env = "") {
  std::string cmd = env.empty() ? "" : "env " + env + " ";
  cmd += trit_command(args);
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  cmd.append(" >").append(shell_quote(out)).append(" 2>").append(shell_quote(err));
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

struct ShellResult {
  int rc = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line, its stderr joined to its stdout.
inline ShellResult run_shell(const std::string& cmd) {
  ShellResult r;
  std::FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    r.output = "popen failed: " + cmd;
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A failed run that printed exactly one line on stderr, starting "trit: " and naming must_name;
// `what` says which run in the messages.
inline void expect_one_line_error(const RunResult& r, const std::string& must_name = "",
                                  const std::string& what = "") {
  EXPECT_NE(r.rc, 0) << what;
  ASSERT_FALSE(r.err.empty()) << what;
  EXPECT_EQ(r.err.rfind("trit: ", 0), 0u) << what << ": stderr:\n" << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << what << ": stderr:\n" << r.err;
  EXPECT_NE(r.err.find(must_name), std::string::npos) << what << ": stderr:\n" << r.err;
}

}  // namespace trit::engine::test
