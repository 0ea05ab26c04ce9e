// Small helpers shared by the tests: a temporary folder removed on exit, and whole-file I/O.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace trit::engine::test {

// A fresh folder under /tmp (or $TMPDIR), removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/trit_test_XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of a file inside the folder.
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), std::streamsize(data.size()));
  if (!out.good()) throw std::runtime_error("cannot write " + path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline bool file_exists(const std::string& path) {
  return std::filesystem::exists(path);
}

struct RunResult {
  int rc = -1;
  std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

#ifdef TRIT_BIN
// Runs the trit binary with the arguments (and environment assignments such as
// "ASAN_OPTIONS=detect_leaks=0", when given); stdout and stderr are captured in files of dir.
inline RunResult run_trit(const TempDir& dir, const std::vector<std::string>& args,
                          const std::string& env = "") {
  std::string cmd = env.empty() ? "" : "env " + env + " ";
  cmd += shell_quote(TRIT_BIN);
  for (const std::string& a : args) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  cmd.append(" >").append(shell_quote(out)).append(" 2>").append(shell_quote(err));
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}
#endif

}  // namespace trit::engine::test
