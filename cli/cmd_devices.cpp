// trit devices: the CPU and the Vulkan devices with the limits, heaps and features trit uses;
// with --delegate KEY, those of the provider (its trit serve's GET /v1/devices).
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/peer_program.h"

namespace trit::cli {
namespace {

// The provider's report; false (after saying why) when it could not be reached.
bool print_provider_devices(const DelegateOptions& d) {
  PeerTunnel tunnel(d);
  httplib::Client c("127.0.0.1", tunnel.port());
  c.set_connection_timeout(60, 0);
  c.set_read_timeout(120, 0);
  httplib::Result r = c.Get("/v1/devices");
  if (!r) r = c.Get("/v1/devices");  // the DHT can time out a first attempt
  if (r && r->status == 200) {
    const nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
    if (j.is_object() && j.contains("report") && j["report"].is_string()) {
      std::printf("provider %s, serving on %s:\n", d.key.c_str(),
                  j.value("serving", std::string("?")).c_str());
      const std::string report = j["report"];
      std::fwrite(report.data(), 1, report.size(), stdout);
      return true;
    }
  }
  const std::string why = !r ? "the connection failed: " + httplib::to_string(r.error())
                          : r->status == 404
                              ? "its trit serve has no GET /v1/devices (an older trit)"
                              : "HTTP " + std::to_string(r->status);
  if (!d.fallback_local) {
    fail("devices --delegate " + d.key + ": " + why +
         " (is `trit peer provide` running there, with this device's key allowed?)");
  }
  std::fprintf(stderr, "trit: the provider %s did not answer (%s); this device's:\n", d.key.c_str(),
               why.c_str());
  return false;
}

}  // namespace

void add_devices_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("devices", "Show the CPU and the Vulkan devices");
  auto d = std::make_shared<DelegateOptions>();
  add_delegate_options(cmd, *d);
  cmd->callback([d] {
    if (!d->key.empty() && print_provider_devices(*d)) return;
    const std::string report = devices_report();
    std::fwrite(report.data(), 1, report.size(), stdout);
  });
}

}  // namespace trit::cli
