// The delegation bridge's program (peer/trit-peer.mjs on Node.js): found, checked and started
// for `trit peer` and for the commands' --delegate.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/common.h"

namespace trit::cli {

// node, the script, then args; fails with what to install when the program or its npm
// packages are missing.
std::vector<std::string> peer_argv(const std::vector<std::string>& args);

// --delegate KEY and its company, shared by the commands that can delegate.
struct DelegateOptions {
  std::string key;         // the provider's public key; empty: run here
  std::string key_file;    // this device's identity (default: the peer program's)
  std::string bootstrap;   // HOST:PORT[,...] of a private DHT
  std::string relay;       // KEY[,...] of blind relays for when no direct path opens
  bool no_direct = false;  // the relays only: no direct connection, no hole punching
  bool fallback_local = false;
};
void add_delegate_options(CLI::App* cmd, DelegateOptions& o);

// `trit peer connect KEY --listen 127.0.0.1:0` as a child process: a local endpoint whose
// connections reach the provider's API. Stopped when the object goes.
class PeerTunnel {
 public:
  explicit PeerTunnel(const DelegateOptions& o);
  ~PeerTunnel();
  PeerTunnel(const PeerTunnel&) = delete;
  PeerTunnel& operator=(const PeerTunnel&) = delete;
  int port() const { return port_; }

 private:
  void stop();
  pid_t pid_ = -1;
  int port_ = 0;
  // Copies the peer program's later stdout lines (the provider's device and round trip) to
  // stderr until it exits, so that it never writes into a closed pipe.
  std::thread relay_;
};

// What a delegated completion did: text streamed through on_text as it came. A provider that
// cannot be reached (status 0) or drops the stream (status 200, not ok) is what
// --fallback-local covers; another status is the provider refusing the request.
struct DelegateResult {
  bool ok = false;          // the stream ended with [DONE]
  int status = 0;           // the provider's HTTP status; 0: no answer
  std::string error;        // why not ok: the provider's error message or the connection's
  int64_t n_generated = 0;  // from the provider's usage
  double seconds = 0;
};

// POST path (/v1/completions or /v1/chat/completions) with body streamed, through the tunnel.
DelegateResult delegate_stream(int port, const std::string& path, const std::string& body,
                               const std::function<void(std::string_view)>& on_text);

}  // namespace trit::cli
