// trit peer: delegation over HyperDHT. The bridge is the Node.js program in peer/ (DESIGN
// section 7); this command runs it in trit's place with the same arguments, so signals and exit
// codes are the program's own.
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/peer_program.h"

namespace trit::cli {

void add_peer_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "peer",
      "Delegate to a stronger device of yours over HyperDHT: key | provide (--serve URL | -m "
      "MODEL [-- serve options]) [--allow FILE] | connect KEY [--listen HOST:PORT] | relay "
      "[--allow FILE] | testnet; each takes --key-file PATH and --bootstrap HOST:PORT[,...]; "
      "provide and connect take --relay KEY[,...] (a blind relay for peers that cannot reach "
      "each other) and --no-direct (the relay only)");
  cmd->prefix_command();  // everything after `peer` goes to the program as it is
  cmd->allow_extras();
  cmd->callback([cmd] {
    std::vector<std::string> argv = peer_argv(cmd->remaining());
    // `provide -m MODEL` starts this trit's serve.
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) ::setenv("TRIT_BIN", std::string(self, size_t(n)).c_str(), 0);
    std::vector<char*> c;
    for (std::string& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    ::execvp(c[0], c.data());
    fail("peer: cannot run " + argv[0] + " (Node.js 18 or later; set TRIT_NODE to its path)");
  });
}

}  // namespace trit::cli
