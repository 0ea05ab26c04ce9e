#include "cli/peer_program.h"

#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>

namespace trit::cli {
namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// peer/: TRIT_PEER_DIR when set, else the source tree's (the CLI runs from its build tree, as
// the README's commands do).
std::string peer_dir() {
  const char* env = std::getenv("TRIT_PEER_DIR");
  return env && *env ? env : TRIT_SOURCE_PEER_DIR;
}

}  // namespace

std::vector<std::string> peer_argv(const std::vector<std::string>& args) {
  const std::string dir = peer_dir();
  const std::string script = dir + "/trit-peer.mjs";
  if (!exists(script)) fail("peer: " + script + " is missing (set TRIT_PEER_DIR to trit's peer/)");
  if (!exists(dir + "/node_modules/hyperdht")) {
    fail("peer: " + dir + "/node_modules/hyperdht is missing: run `npm ci --prefix " + dir +
         "` (tools/setup.sh does)");
  }
  const char* node = std::getenv("TRIT_NODE");
  std::vector<std::string> argv = {node && *node ? node : "node", script};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

void add_delegate_options(CLI::App* cmd, DelegateOptions& o) {
  cmd->add_option("--delegate", o.key,
                  "Run on the device with this public key (`trit peer provide` there); -m is "
                  "then optional: the provider's model");
  cmd->add_flag("--fallback-local", o.fallback_local,
                "With --delegate: run here (-m) when the provider cannot be reached or drops");
  cmd->add_option("--key-file", o.key_file, "With --delegate: this device's key file");
  cmd->add_option("--bootstrap", o.bootstrap,
                  "With --delegate: HOST:PORT[,...] of a private DHT instead of the public one");
  cmd->add_option("--relay", o.relay,
                  "With --delegate: KEY[,...] of blind relays (`trit peer relay`) to go through "
                  "when no direct path to the provider opens");
  cmd->add_flag("--no-direct", o.no_direct,
                "With --delegate and --relay: through the relay only (no direct connection to "
                "the provider, no hole punching)");
}

PeerTunnel::PeerTunnel(const DelegateOptions& o) {
  std::vector<std::string> args = {"connect", o.key, "--listen", "127.0.0.1:0"};
  if (!o.key_file.empty()) args.insert(args.end(), {"--key-file", o.key_file});
  if (!o.bootstrap.empty()) args.insert(args.end(), {"--bootstrap", o.bootstrap});
  if (!o.relay.empty()) args.insert(args.end(), {"--relay", o.relay});
  if (o.no_direct) args.push_back("--no-direct");
  std::vector<std::string> argv = peer_argv(args);
  int fds[2];
  if (::pipe(fds) != 0) fail("--delegate: cannot make a pipe");
  pid_ = ::fork();
  if (pid_ < 0) fail("--delegate: cannot start the peer program");
  if (pid_ == 0) {
    // A process group of its own: Ctrl-C at the terminal reaches this program, which may
    // still need the tunnel (to cancel a delegated job), and not the tunnel; it ends with us.
    ::setpgid(0, 0);
#ifdef __linux__
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> c;
    for (std::string& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    ::execvp(c[0], c.data());
    _exit(127);
  }
  ::close(fds[1]);
  // Its first stdout line: "listening on http://127.0.0.1:PORT -> KEY".
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[256];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, size_t(n));
  }
  std::smatch m;
  if (!std::regex_search(line, m, std::regex(R"(listening on http://127\.0\.0\.1:(\d+))"))) {
    ::close(fds[0]);
    stop();
    fail("--delegate " + o.key + ": the peer program did not start (its messages are above)");
  }
  port_ = std::stoi(m[1]);
  std::string rest = line.substr(line.find('\n') + 1);
  relay_ = std::thread([fd = fds[0], rest]() {
    if (!rest.empty()) std::fprintf(stderr, "%s", rest.c_str());
    char buf[512];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) std::fwrite(buf, 1, size_t(n), stderr);
    ::close(fd);
  });
}

PeerTunnel::~PeerTunnel() {
  stop();
}

void PeerTunnel::stop() {
  // The relay ends when the peer program exits (its end of the pipe closes).
  struct JoinRelay {
    std::thread& t;
    ~JoinRelay() {
      if (t.joinable()) t.join();
    }
  } join{relay_};
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 250; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    ::usleep(20000);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

DelegateResult delegate_stream(int port, const std::string& path, const std::string& body,
                               const std::function<void(std::string_view)>& on_text) {
  DelegateResult res;
  const auto t0 = std::chrono::steady_clock::now();
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(60, 0);
  c.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  std::string buffer, error_body;
  req.response_handler = [&](const httplib::Response& r) {
    res.status = r.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") {
        res.ok = res.error.empty();
        continue;
      }
      const nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
      if (!j.is_object()) continue;
      if (j.contains("error")) {
        res.error = j["error"].value("message", payload);
        continue;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        res.n_generated = j["usage"].value("completion_tokens", int64_t(0));
      }
      if (!j.contains("choices") || j["choices"].empty()) continue;
      const nlohmann::json& ch = j["choices"][0];
      std::string text;
      if (ch.contains("text") && ch["text"].is_string()) text = ch["text"];
      if (ch.contains("delta") && ch["delta"].contains("content") &&
          ch["delta"]["content"].is_string()) {
        text = ch["delta"]["content"];
      }
      if (!text.empty()) on_text(text);
    }
    error_body = buffer;  // an error answer is one JSON object without events
    return true;
  };
  const httplib::Result r = c.send(req);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r) {
    res.ok = false;
    if (res.error.empty()) res.error = "the connection failed: " + httplib::to_string(r.error());
  } else if (r->status != 200) {
    res.ok = false;
    res.status = r->status;
    if (error_body.empty()) error_body = r->body;
    const nlohmann::json j = nlohmann::json::parse(error_body, nullptr, false);
    res.error = j.is_object() && j.contains("error")
                    ? j["error"].value("message", error_body)
                    : "HTTP " + std::to_string(r->status) + " " + error_body.substr(0, 200);
  } else if (!res.ok && res.error.empty()) {
    res.error = "the stream ended before [DONE]";
  }
  return res;
}

}  // namespace trit::cli
