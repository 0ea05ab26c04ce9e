// trit devices: the CPU and the Vulkan devices with the limits, heaps and features trit uses.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_devices_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("devices", "Show the CPU and the Vulkan devices");
  cmd->callback([] {
    const std::string report = devices_report();
    std::fwrite(report.data(), 1, report.size(), stdout);
  });
}

}  // namespace trit::cli
