// Profile: the per-pipeline GPU time table.
#include "backend/vulkan/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace trit::engine::vk {

bool Profile::wanted() {
  const char* v = std::getenv("TRIT_VK_PROFILE");
  return v && *v && std::string(v) != "0";
}

bool Profile::host_only() {
  const char* v = std::getenv("TRIT_VK_PROFILE");
  return v && std::string(v) == "host";
}

void Profile::add_command(const std::string& name, double ns) {
  Entry& e = commands_[name];
  ++e.count;
  e.ns += ns;
}

void Profile::add_submission(double record_ns, double gpu_ns, double wait_ns) {
  ++submissions_;
  record_ns_ += record_ns;
  gpu_ns_ += gpu_ns;
  wait_ns_ += wait_ns;
}

Profile::~Profile() {
  std::vector<std::pair<std::string, Entry>> rows(commands_.begin(), commands_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  double total = 0;
  uint64_t count = 0;
  for (const auto& [name, e] : rows) {
    total += e.ns;
    count += e.count;
  }
  std::fprintf(stderr,
               "vulkan profile (%s): %llu submissions, host recording %.1f ms, GPU %.1f ms, "
               "host waiting %.1f ms; %llu commands, %.1f ms\n",
               device_.c_str(), static_cast<unsigned long long>(submissions_), record_ns_ / 1e6,
               gpu_ns_ / 1e6, wait_ns_ / 1e6, static_cast<unsigned long long>(count), total / 1e6);
  std::fprintf(stderr, "  %10s %8s %10s %6s  %s\n", "ms", "count", "us/cmd", "%", "pipeline");
  for (const auto& [name, e] : rows) {
    std::fprintf(stderr, "  %10.2f %8llu %10.2f %6.1f  %s\n", e.ns / 1e6,
                 static_cast<unsigned long long>(e.count), e.ns / 1e3 / double(e.count),
                 total > 0 ? 100 * e.ns / total : 0.0, name.c_str());
  }
}

}  // namespace trit::engine::vk
