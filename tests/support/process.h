// A `trit` child process for end-to-end tests of long-running commands (`trit peer ...`):
// stdout and stderr go to files of the test's folder, a line on stdout is awaited, and the
// process is stopped with a signal (SIGKILL at the latest when the object goes).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "support/files.h"

namespace trit::engine::test {

class TritProcess {
 public:
  // Starts `trit ARGS` with env (NAME=VALUE) added to its environment; name tells the log files
  // apart.
  TritProcess(const TempDir& dir, const std::string& name, std::vector<std::string> args,
              const std::vector<std::string>& env = {})
      : out_(dir.file(name + ".out")), err_(dir.file(name + ".err")) {
    std::fclose(std::fopen(out_.c_str(), "w"));
    std::fclose(std::fopen(err_.c_str(), "w"));
    pid_ = fork();
    if (pid_ == 0) {
      std::freopen(out_.c_str(), "w", stdout);
      std::freopen(err_.c_str(), "w", stderr);
      for (const std::string& e : env) putenv(strdup(e.c_str()));
      setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
      std::vector<char*> argv;
      std::string bin = TRIT_BIN;
      argv.push_back(bin.data());
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(TRIT_BIN, argv.data());
      _exit(127);
    }
  }
  ~TritProcess() { stop(SIGKILL, 5); }
  TritProcess(const TritProcess&) = delete;
  TritProcess& operator=(const TritProcess&) = delete;

  std::string out() const { return read_file(out_); }
  std::string err() const { return read_file(err_); }

  // The first whole stdout line that starts with prefix, waiting up to timeout_s; "" (and a
  // test failure) when the process exits first or the time runs out.
  std::string wait_line(const std::string& prefix, int timeout_s = 60) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = out();
      for (size_t at = 0; at < text.size();) {
        const size_t end = text.find('\n', at);
        if (end == std::string::npos) break;
        if (text.compare(at, prefix.size(), prefix) == 0) return text.substr(at, end - at);
        at = end + 1;
      }
      int status = 0;
      if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "the process exited before printing '" << prefix << "': " << err();
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no line '" << prefix << "' after " << timeout_s << " s: " << err();
    return "";
  }

  // True once stderr holds text, waiting up to timeout_s.
  bool wait_err(const std::string& text, int timeout_s = 30) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (err().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Waits for the process to exit on its own: its exit code, or -1 (a signal, or still
  // running after timeout_s, when it is killed).
  int wait_exit(int timeout_s = 120) {
    for (int i = 0; pid_ > 0 && i < timeout_s * 50; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "still running after " << timeout_s << " s: " << err();
    return stop(SIGKILL, 5);
  }

  // Sends sig and waits; the exit code, or -1 (killed by a signal, or still running).
  int stop(int sig = SIGTERM, int timeout_s = 30) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    for (int i = 0; i < timeout_s * 50; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (sig != SIGKILL) return stop(SIGKILL, 5);
    return -1;
  }

 private:
  std::string out_, err_;
  pid_t pid_ = -1;
};

}  // namespace trit::engine::test
