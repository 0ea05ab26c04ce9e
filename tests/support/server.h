// A `trit serve` process for the server's end-to-end tests: started on a free port of
// 127.0.0.1, reached over real sockets (cpp-httplib's client), stopped with a signal.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "support/cli.h"
#include "support/files.h"

namespace trit::engine::test {

class ServerProcess {
 public:
  // Starts `trit serve ARGS --port 0` (stderr to a file of dir) and waits for its "listening
  // on" line; fails the test when it exits first. asan_options reach a sanitized build only.
  ServerProcess(const TempDir& dir, std::vector<std::string> args,
                std::string asan_options = "detect_leaks=0")
      : log_(dir.file("serve.log")), state_(dir.file("state")) {
    args.insert(args.begin(), "serve");
    args.insert(args.end(), {"--port", "0"});
    std::fclose(std::fopen(log_.c_str(), "w"));  // there before the child writes to it
    pid_ = fork();
    if (pid_ == 0) {
      std::freopen(log_.c_str(), "w", stderr);
      std::vector<char*> argv;
      std::string bin = TRIT_BIN;
      argv.push_back(bin.data());
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      // The CPU is enough for these tests, and leaks of a killed server are not the question.
      setenv("ASAN_OPTIONS", asan_options.c_str(), 1);
      // Fine-tuning jobs live in the test's folder, not the user's.
      setenv("XDG_STATE_HOME", state_.c_str(), 1);
      execv(TRIT_BIN, argv.data());
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = log();
      const size_t at = text.find("listening on http://");
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        const size_t colon = text.find(':', at + 20);
        port_ = std::stoi(text.substr(colon + 1));
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "trit serve exited: " << text;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "trit serve did not start: " << log();
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return read_file(log_); }
  // How many times `text` occurs in the log (the server writes a line per request answered).
  size_t count_in_log(const std::string& text) const {
    const std::string l = log();
    size_t n = 0;
    for (size_t at = 0; (at = l.find(text, at)) != std::string::npos; ++at) ++n;
    return n;
  }
  // Waits up to 2 s for `text` to occur n times: a streamed request is logged once its last
  // byte is out, which can be just after the client has it. Returns the count seen last.
  size_t wait_in_log(const std::string& text, size_t n) const {
    size_t seen = count_in_log(text);
    for (int i = 0; i < 100 && seen < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      seen = count_in_log(text);
    }
    return seen;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120, 0);
    return c;
  }

  // Sends sig and waits for the process to exit; returns its exit code (-1: killed by a
  // signal or still running after timeout_s).
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
    return -1;
  }

 private:
  std::string log_;
  std::string state_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace trit::engine::test
