// trit peer: delegation over HyperDHT. The bridge is the Node.js program in peer/ (DESIGN
// section 7); this command finds it and runs it in trit's place with the same arguments, so
// signals and exit codes are the program's own.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {
namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// peer/trit-peer.mjs: TRIT_PEER_DIR when set, else the source tree's peer/ (the CLI runs from
// its build tree, as the README's commands do).
std::string peer_dir() {
  const char* env = std::getenv("TRIT_PEER_DIR");
  return env && *env ? env : TRIT_SOURCE_PEER_DIR;
}

}  // namespace

void add_peer_command(CLI::App& app) {
  auto args = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand(
      "peer",
      "Delegate to a stronger device of yours over HyperDHT: key | provide --serve URL [--allow "
      "FILE] | connect KEY [--listen HOST:PORT] | testnet; each takes --key-file PATH and "
      "--bootstrap HOST:PORT[,...]");
  cmd->prefix_command();  // everything after `peer` goes to the program as it is
  cmd->allow_extras();
  cmd->callback([cmd, args] {
    const std::string dir = peer_dir();
    const std::string script = dir + "/trit-peer.mjs";
    if (!exists(script))
      fail("peer: " + script + " is missing (set TRIT_PEER_DIR to trit's peer/)");
    if (!exists(dir + "/node_modules/hyperdht")) {
      fail("peer: " + dir + "/node_modules/hyperdht is missing: run `npm ci --prefix " + dir +
           "` (tools/setup.sh does)");
    }
    const char* node_env = std::getenv("TRIT_NODE");
    const std::string node = node_env && *node_env ? node_env : "node";
    std::vector<std::string> argv = {node, script};
    for (const std::string& a : cmd->remaining()) argv.push_back(a);
    std::vector<char*> c;
    for (std::string& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    ::execvp(node.c_str(), c.data());
    fail("peer: cannot run " + node + " (Node.js 18 or later; set TRIT_NODE to its path)");
  });
}

}  // namespace trit::cli
