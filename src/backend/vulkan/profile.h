// Profile: where a context's GPU time goes, for tuning (TRIT_VK_PROFILE=1). Sequences write a
// timestamp after every command; each command is charged the time since the previous one
// (its own run plus any wait at the barrier before it), under its pipeline's name. Host time
// spent recording and waiting for fences is counted too. The table is printed to stderr when
// the context closes. TRIT_VK_PROFILE=host counts the host times alone.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace trit::engine::vk {

class Profile {
 public:
  // ns_per_tick: the device's timestampPeriod.
  Profile(std::string device, double ns_per_tick) : device_(std::move(device)), ns_(ns_per_tick) {}
  ~Profile();  // prints the table

  // True when TRIT_VK_PROFILE is set to anything but "" or "0".
  static bool wanted();
  // TRIT_VK_PROFILE=host: host recording and waiting times only, no timestamps (submissions
  // then go out in chunks as they do unprofiled).
  static bool host_only();

  double ns_per_tick() const { return ns_; }
  void add_command(const std::string& name, double ns);
  void add_submission(double record_ns, double gpu_ns, double wait_ns);

 private:
  struct Entry {
    uint64_t count = 0;
    double ns = 0;
  };
  std::string device_;
  double ns_;
  std::map<std::string, Entry> commands_;
  uint64_t submissions_ = 0;
  double record_ns_ = 0, gpu_ns_ = 0, wait_ns_ = 0;
};

// Nanoseconds since an arbitrary start, for host intervals.
inline double host_ns() {
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count());
}

}  // namespace trit::engine::vk
