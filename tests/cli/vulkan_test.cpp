// The CLI's Vulkan contract (DESIGN section 4) through the real binary: `trit logits` on
// --device vulkan equals --device cpu (also with a small binding limit), bad --device values and
// TRIT_VK_MAX_BUFFER_MB fail with one line, the default device never picks a software driver
// and says so once, and `trit devices` lists every device with its binding limit. Tests that need
// a Vulkan device skip without one, unless TRIT_REQUIRE_VULKAN=1 makes them fail.
#include "support/vulkan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/vulkan/binding_limit.h"
#include "backend/vulkan/device_info.h"
#include "core/error.h"
#include "support/cli.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::RunResult;
using test::TempDir;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p < text.size()) {
    const size_t e = std::min(text.find('\n', p), text.size());
    out.push_back(text.substr(p, e - p));
    p = e + 1;
  }
  return out;
}

class VulkanCli : public ::testing::Test {
 protected:
  void SetUp() override { model_ = test::create_model(dir_, "m.gguf", test::tiny_options(12)); }
  // `trit logits` of 40 fixed ids into dir/<name>.f32 with the extra arguments.
  // Float activations unless act_quant says otherwise.
  RunResult logits(const std::string& name, std::vector<std::string> extra,
                   const std::string& env = "", const std::string& act_quant = "none") {
    std::vector<std::string> args = {
        "logits", "-m", model_,        "-o",     dir_.file(name + ".f32"),
        "--ids",  ids_, "--act-quant", act_quant};
    args.insert(args.end(), extra.begin(), extra.end());
    return test::run_trit(dir_, args, env);
  }
  std::vector<float> result(const std::string& name) {
    return test::read_f32_file(dir_.file(name + ".f32"));
  }

  TempDir dir_;
  std::string model_;
  std::string ids_ =
      "256,1,2,3,40,50,60,7,8,9,100,110,120,13,14,15,160,170,180,19,20,21,220,230,240,25,26,27,"
      "280,290,300,31,32,33,340,350,360,37,38,39";
};

TEST_F(VulkanCli, LogitsOnVulkanEqualCpu) {
  REQUIRE_VULKAN_DEVICE();
  const int64_t V = hparams_preset("tiny")->n_vocab;
  const RunResult cpu = logits("cpu", {"--device", "cpu"});
  ASSERT_EQ(cpu.rc, 0) << cpu.err;
  const RunResult vk = logits("vk", {"--device", "vulkan"});
  ASSERT_EQ(vk.rc, 0) << vk.err;
  // Float activations (--act-quant none): only f32 rounding differs.
  test::expect_logits_close(result("cpu"), result("vk"), V, 1e-4, "--device vulkan");
  // A 1 MiB binding limit, by flag or by environment, gives the untiled result.
  const RunResult vk1 = logits("vk1", {"--device", "vulkan", "--max-buffer-mb", "1"});
  ASSERT_EQ(vk1.rc, 0) << vk1.err;
  EXPECT_EQ(result("vk1"), result("vk")) << "--max-buffer-mb 1";
  const RunResult env1 = logits("env1", {"--device", "vulkan"}, "TRIT_VK_MAX_BUFFER_MB=1");
  ASSERT_EQ(env1.rc, 0) << env1.err;
  EXPECT_EQ(result("env1"), result("vk")) << "TRIT_VK_MAX_BUFFER_MB=1";
  // W1.58A8 too (the default), with the looser bound of activation rounding flips.
  const RunResult cpu8 = logits("cpu8", {"--device", "cpu"}, "", "int8");
  const RunResult vk8 = logits("vk8", {"--device", "vulkan"}, "", "int8");
  ASSERT_EQ(cpu8.rc, 0) << cpu8.err;
  ASSERT_EQ(vk8.rc, 0) << vk8.err;
  test::expect_logits_close(result("cpu8"), result("vk8"), V, 3e-2,
                            "--device vulkan --act-quant int8");
}

TEST_F(VulkanCli, DeviceNumberOutOfRangeNamesTheDevices) {
  REQUIRE_VULKAN_DEVICE();
  const RunResult r = logits("x", {"--device", "vulkan:99"});
  test::expect_one_line_error(r, "", "--device vulkan:99");
  EXPECT_NE(r.err.find("99"), std::string::npos) << r.err;
  // It names how many devices there are, or lists every one.
  const size_t n = test::vulkan_devices().devices.size();
  bool all_listed = true;
  for (const VulkanDeviceInfo& d : test::vulkan_devices().devices)
    all_listed &= r.err.find(d.name) != std::string::npos;
  EXPECT_TRUE(all_listed || r.err.find(cat(n, " device")) != std::string::npos ||
              r.err.find(cat(n, " Vulkan device")) != std::string::npos)
      << r.err;
  EXPECT_FALSE(test::file_exists(dir_.file("x.f32")));
}

TEST_F(VulkanCli, UnknownDeviceNamesTheAcceptedValues) {
  const RunResult r = logits("x", {"--device", "gpu"});
  test::expect_one_line_error(r, "", "--device gpu");
  for (const char* v : {"gpu", "cpu", "vulkan", "vulkan:N"})
    EXPECT_NE(r.err.find(v), std::string::npos) << v << ": " << r.err;
}

TEST_F(VulkanCli, JunkMaxBufferVariableIsAnError) {
  REQUIRE_VULKAN_DEVICE();
  const RunResult r = logits("x", {"--device", "vulkan"}, "TRIT_VK_MAX_BUFFER_MB=junk");
  test::expect_one_line_error(r, "", "TRIT_VK_MAX_BUFFER_MB=junk");
  EXPECT_NE(r.err.find("TRIT_VK_MAX_BUFFER_MB"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("junk"), std::string::npos) << r.err;
}

// Without --device, a machine whose Vulkan devices are all software ones (lavapipe) or that has
// none runs on the CPU and says why in one line.
TEST_F(VulkanCli, DefaultDeviceSkipsSoftwareDrivers) {
  for (const VulkanDeviceInfo& d : test::vulkan_devices().devices) {
    if (d.is_real_gpu()) GTEST_SKIP() << "a real GPU is present: " << d.name;
  }
  const RunResult def = logits("def", {});
  ASSERT_EQ(def.rc, 0) << def.err;
  std::vector<std::string> why;
  for (const std::string& l : lines(def.err)) {
    if (l.rfind("trit: running on the CPU:", 0) == 0) why.push_back(l);
  }
  ASSERT_EQ(why.size(), 1u) << def.err;
  EXPECT_GT(why[0].size(), std::strlen("trit: running on the CPU: ")) << why[0];
  for (const VulkanDeviceInfo& d :
       test::vulkan_devices().devices)  // the reason names the software device
    EXPECT_NE(why[0].find(d.name), std::string::npos) << why[0];
  const RunResult cpu = logits("cpu", {"--device", "cpu"});
  ASSERT_EQ(cpu.rc, 0) << cpu.err;
  EXPECT_EQ(result("def"), result("cpu"));  // it really ran on the CPU
  for (const std::string& l : lines(cpu.err))
    EXPECT_NE(l.rfind("trit: running on", 0), 0u) << "--device cpu: " << l;
}

TEST_F(VulkanCli, DevicesListsEveryDeviceWithItsBindingLimit) {
  REQUIRE_VULKAN_DEVICE();
  const RunResult r = test::run_trit(dir_, {"devices"});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const VulkanDeviceInfo& d : test::vulkan_devices().devices) {
    EXPECT_NE(r.out.find(cat("[", d.index, "] ", d.name)), std::string::npos) << r.out;
    // The first line after the device's header that mentions its binding limit shows it.
    const size_t at = r.out.find(cat("[", d.index, "] ", d.name));
    const size_t bl = r.out.find("binding limit", at == std::string::npos ? 0 : at);
    ASSERT_NE(bl, std::string::npos) << r.out;
    const std::string line = r.out.substr(bl, r.out.find('\n', bl) - bl);
    EXPECT_TRUE(line.find(std::to_string(d.binding_limit())) != std::string::npos ||
                line.find(std::to_string(vk::binding_limit(d))) != std::string::npos)
        << d.name << ": " << line;
  }
}

}  // namespace
}  // namespace trit::engine
