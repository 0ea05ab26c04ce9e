// The Vulkan core layer (src/backend/vulkan: loader, device choice, binding limits, context,
// buffers, tiled tensors, pipelines, sequences) on whatever device the machine has; lavapipe in
// CI. Without a Vulkan
// device the device tests skip, unless TRIT_REQUIRE_VULKAN=1 makes them fail.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/vulkan/binding_limit.h"
#include "backend/vulkan/buffer.h"
#include "backend/vulkan/context.h"
#include "backend/vulkan/device_info.h"
#include "backend/vulkan/pipeline.h"
#include "backend/vulkan/sequence.h"
#include "backend/vulkan/shaders.h"
#include "backend/vulkan/tiled_tensor.h"
#include "support/errors.h"
#include "support/vulkan.h"

namespace trit::engine::vk {
namespace {

using test::expect_error;
using test::MiB;
using test::ScopedEnv;

// ---- Without a device ----------------------------------------------------------------------

TEST(VulkanDeviceChoice, Parse) {
  EXPECT_EQ(DeviceChoice::parse("").kind, DeviceChoice::Kind::RealGpu);
  EXPECT_EQ(DeviceChoice::parse("auto").kind, DeviceChoice::Kind::RealGpu);
  EXPECT_EQ(DeviceChoice::parse("vulkan").kind, DeviceChoice::Kind::Any);
  const DeviceChoice c = DeviceChoice::parse("vulkan:2");
  EXPECT_EQ(c.kind, DeviceChoice::Kind::Index);
  EXPECT_EQ(c.index, 2u);
  for (const char* bad : {"vulkan:", "vulkan:x", "vulkan:-1", "vulkan:1x", "cuda", "vulkan2"}) {
    expect_error([&] { DeviceChoice::parse(bad); }, bad);
  }
}

VulkanDeviceInfo fake_device(uint32_t index, VulkanDeviceType type, const char* name) {
  VulkanDeviceInfo d;
  d.index = index;
  d.type = type;
  d.name = name;
  return d;
}

TEST(VulkanDeviceChoice, ChooseRealGpusFirst) {
  const std::vector<VulkanDeviceInfo> soft = {fake_device(0, VulkanDeviceType::Cpu, "llvmpipe")};
  EXPECT_EQ(choose_device(soft, DeviceChoice::any()), 0u);
  EXPECT_EQ(choose_device(soft, DeviceChoice::at(0)), 0u);
  expect_error([&] { choose_device(soft, DeviceChoice::real_gpu()); }, "no real GPU");
  expect_error([&] { choose_device(soft, DeviceChoice::real_gpu()); }, "llvmpipe");
  expect_error([&] { choose_device(soft, DeviceChoice::at(3)); }, "no such device");
  expect_error([&] { choose_device({}, DeviceChoice::any()); }, "no Vulkan devices");

  const std::vector<VulkanDeviceInfo> mixed = {
      fake_device(0, VulkanDeviceType::Cpu, "llvmpipe"),
      fake_device(1, VulkanDeviceType::Virtual, "virgl"),
      fake_device(2, VulkanDeviceType::Integrated, "igpu"),
      fake_device(3, VulkanDeviceType::Discrete, "dgpu"),
  };
  EXPECT_EQ(choose_device(mixed, DeviceChoice::any()), 2u);
  EXPECT_EQ(choose_device(mixed, DeviceChoice::real_gpu()), 2u);
  EXPECT_EQ(choose_device(mixed, DeviceChoice::at(0)), 0u);
  const std::vector<VulkanDeviceInfo> no_real = {mixed[0], mixed[1]};
  EXPECT_EQ(choose_device(no_real, DeviceChoice::any()), 1u);  // virtual before cpu
}

VulkanDeviceInfo lavapipe_like() {
  VulkanDeviceInfo d;
  d.name = "fake";
  d.max_storage_buffer_range = 128 * MiB;
  d.max_memory_allocation_size = 2048 * MiB;
  d.max_buffer_size = 0xffffffffull;
  d.heaps = {{2048 * MiB, true, 0, 0}};
  return d;
}

TEST(VulkanBindingLimit, SmallestLimitRoundedDown) {
  VulkanDeviceInfo d = lavapipe_like();
  EXPECT_EQ(binding_limit(d), 128 * MiB);
  EXPECT_EQ(binding_limit(d, 64 * MiB), 64 * MiB);
  EXPECT_EQ(binding_limit(d, 1024 * MiB), 128 * MiB);  // an override never raises it
  EXPECT_EQ(binding_limit(d, 1000), 768u);             // rounded down to 256 bytes
  expect_error([&] { binding_limit(d, 100); }, "below the minimum of 256");

  d.max_storage_buffer_range = 0xffffffffull;  // NVIDIA reports 4 GiB - 1
  d.max_memory_allocation_size = 0;            // not reported: does not count
  d.max_buffer_size = 0;
  d.heaps = {{8192 * MiB, true, 0, 0}};
  EXPECT_EQ(binding_limit(d), 0xffffffffull - 255);
  EXPECT_EQ(binding_limit(d) % kBindingAlign, 0u);
  d.heaps = {{100 * MiB, true, 0, 0}, {16384 * MiB, false, 0, 0}};  // half the device heap
  EXPECT_EQ(binding_limit(d), 50 * MiB);
  EXPECT_EQ(binding_limit(d, 0, 0.25), 25 * MiB);
  d.heaps = {{4096 * MiB, true, 300 * MiB, 0}};  // the budget counts where known
  EXPECT_EQ(binding_limit(d), 150 * MiB);
}

TEST(VulkanBindingLimit, ParseOverride) {
  EXPECT_EQ(parse_max_buffer_mb("256", "--max-buffer-mb"), 256 * MiB);
  EXPECT_EQ(parse_max_buffer_mb(" 64 ", "--max-buffer-mb"), 64 * MiB);
  for (const char* bad : {"", " ", "abc", "0", "-5", "1.5", "12MB", "99999999999999999999"}) {
    expect_error([&] { parse_max_buffer_mb(bad, "--max-buffer-mb"); },
                 std::string("--max-buffer-mb: '") + bad + "'");
  }
}

TEST(VulkanBindingLimit, EnvironmentVariable) {
  {
    ScopedEnv env("TRIT_VK_MAX_BUFFER_MB", nullptr);
    EXPECT_EQ(max_buffer_bytes_from_env(), 0u);
  }
  {
    ScopedEnv env("TRIT_VK_MAX_BUFFER_MB", "");
    EXPECT_EQ(max_buffer_bytes_from_env(), 0u);
  }
  {
    ScopedEnv env("TRIT_VK_MAX_BUFFER_MB", "32");
    EXPECT_EQ(max_buffer_bytes_from_env(), 32 * MiB);
  }
  {
    ScopedEnv env("TRIT_VK_MAX_BUFFER_MB", "lots");
    expect_error([] { max_buffer_bytes_from_env(); }, "TRIT_VK_MAX_BUFFER_MB: 'lots'");
  }
}

TEST(VulkanShaders, Embedded) {
  const auto words = shader_spirv("test_axpy");
  ASSERT_GT(words.size(), 5u);
  EXPECT_EQ(words[0], 0x07230203u);  // the SPIR-V magic number
  const auto names = shader_names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  expect_error([] { shader_spirv("no_such_shader"); }, "no embedded shader 'no_such_shader'");
}

// ---- On a device ----------------------------------------------------------------------------

// Skips (or, with TRIT_REQUIRE_VULKAN=1, fails) when the machine has no Vulkan device.
class VulkanCore : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_VULKAN_DEVICE();
    list_ = enumerate_vulkan_devices();
  }
  // A context on the first device of any kind (lavapipe here).
  std::unique_ptr<Context> open(uint64_t max_buffer_bytes = 0, bool map = true) {
    ContextOptions o;
    o.device = DeviceChoice::any();
    o.max_buffer_bytes = max_buffer_bytes;
    o.map_device_memory = map;
    return std::make_unique<Context>(o);
  }
  bool only_software() const { return default_vulkan_device(list_.devices) < 0; }

  VulkanDeviceList list_;
};

TEST_F(VulkanCore, DeviceSelection) {
  auto ctx = open();
  const uint32_t any = choose_device(list_.devices, DeviceChoice::any());
  EXPECT_EQ(ctx->caps().info.name, list_.devices[any].name);
  if (only_software()) {
    EXPECT_EQ(ctx->caps().info.type, VulkanDeviceType::Cpu);  // lavapipe
    expect_error([] { Context c(ContextOptions{}); }, "no real GPU");
  }
  ContextOptions o;
  o.device = DeviceChoice::at(0);
  Context first(o);
  EXPECT_EQ(first.caps().info.name, list_.devices[0].name);
  o.device = DeviceChoice::at(uint32_t(list_.devices.size()));
  expect_error([&] { Context c(o); }, "no such device");
}

TEST_F(VulkanCore, CapsAreSane) {
  auto ctx = open();
  const DeviceCaps& c = ctx->caps();
  EXPECT_GT(c.binding_limit, 0u);
  EXPECT_EQ(c.binding_limit % kBindingAlign, 0u);
  EXPECT_LE(c.binding_limit, c.info.max_storage_buffer_range);
  EXPECT_EQ(c.binding_limit, binding_limit(c.info));
  EXPECT_GE(c.info.max_compute_work_group_count[0], 65535u);
  EXPECT_GE(c.info.max_compute_work_group_invocations, 128u);
  EXPECT_GE(c.info.max_push_constants_size, 128u);
  EXPECT_GT(c.info.subgroup_size, 0u);
  EXPECT_TRUE(c.info.subgroup_operations & VK_SUBGROUP_FEATURE_BASIC_BIT);
  EXPECT_GT(c.info.min_storage_buffer_offset_alignment, 0u);
  EXPECT_LE(c.info.min_storage_buffer_offset_alignment, kBindingAlign);
  ASSERT_FALSE(ctx->heaps().empty());
  EXPECT_GT(c.info.device_local_bytes(), 0u);
  // Enabled features are a subset of those offered.
  EXPECT_LE(c.enabled.storage_buffer_16bit, c.info.storage_buffer_16bit);
  EXPECT_LE(c.enabled.storage_buffer_8bit, c.info.storage_buffer_8bit);
  EXPECT_LE(c.enabled.shader_float16, c.info.shader_float16);
  EXPECT_LE(c.enabled.shader_int8, c.info.shader_int8);
  EXPECT_LE(c.enabled.integer_dot_product, c.info.integer_dot_product);
  // Cooperative matrices are enabled exactly when the device offers what the module needs.
  EXPECT_EQ(c.enabled.coop_tiles.has_value(), plan_coop_tiles(c.info).has_value());
  if (c.enabled.coop_tiles) {
    EXPECT_TRUE(c.enabled.shader_int8);
  }
  {
    ContextOptions o;
    o.device = DeviceChoice::any();
    o.cooperative_matrix = CoopChoice::Off;
    EXPECT_FALSE(Context(o).caps().enabled.coop_tiles.has_value());
  }
  if (c.info.name.find("llvmpipe") != std::string::npos) {
    EXPECT_EQ(c.binding_limit, 128 * MiB);
    EXPECT_TRUE(c.uma);
    EXPECT_TRUE(c.enabled.storage_buffer_8bit && c.enabled.storage_buffer_16bit);
    EXPECT_TRUE(c.enabled.integer_dot_product);
  }
  auto small = open(1 * MiB);
  EXPECT_EQ(small->binding_limit(), 1 * MiB);
  auto odd = open(1 * MiB + 1000);
  EXPECT_EQ(odd->binding_limit(), 1 * MiB + 768);
}

TEST_F(VulkanCore, BuffersAndOutOfMemory) {
  auto ctx = open();
  Buffer host(*ctx, 1001, MemoryKind::Host, "'host'");
  EXPECT_EQ(host.size(), 1004u);  // whole words
  EXPECT_NE(host.mapped(), nullptr);
  Buffer dev(*ctx, 4096, MemoryKind::Device, "'dev'");
  EXPECT_EQ(dev.mapped() != nullptr, ctx->caps().uma);
  Buffer moved = std::move(dev);
  EXPECT_FALSE(dev);
  EXPECT_TRUE(moved);

  // More than any heap: the distinct error a planner catches to retry with smaller pieces.
  uint64_t biggest = 0;
  for (const VulkanHeap& h : ctx->heaps()) biggest = std::max(biggest, h.size);
  expect_error<OutOfDeviceMemory>(
      [&] { Buffer b(*ctx, biggest + 64 * MiB, MemoryKind::Device, "'huge' piece 0"); },
      "'huge' piece 0");
  try {
    Buffer b(*ctx, biggest + 64 * MiB, MemoryKind::Device, "'huge'");
  } catch (const OutOfDeviceMemory& e) {
    EXPECT_NE(std::string(e.what()).find("VK_ERROR_OUT_OF_DEVICE_MEMORY"), std::string::npos)
        << e.what();
  }
}

TEST_F(VulkanCore, TiledTensorLayout) {
  auto ctx = open(1 * MiB);
  TiledTensor t(*ctx, "t", 1000, 3000);  // 349 rows of 3000 bytes fit in 1 MiB
  EXPECT_EQ(t.rows_per_piece(), 349u);
  ASSERT_EQ(t.pieces(), 3u);
  EXPECT_EQ(t.piece(2).row0, 698u);
  EXPECT_EQ(t.piece(2).row1, 1000u);
  for (size_t i = 0; i < t.pieces(); ++i) EXPECT_LE(t.piece(i).buffer.size(), 1 * MiB);
  EXPECT_EQ(t.piece_of(348), 0u);
  EXPECT_EQ(t.piece_of(349), 1u);
  EXPECT_EQ(t.piece_of(999), 2u);
  expect_error([&] { t.piece_of(1000); }, "row 1000 of 1000");

  const std::vector<PieceRun> runs = t.runs(300, 720);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].piece, 0u);
  EXPECT_EQ(runs[0].row0, 300u);
  EXPECT_EQ(runs[0].row1, 349u);
  EXPECT_EQ(runs[0].local0, 300u);
  EXPECT_EQ(runs[1].rows(), 349u);
  EXPECT_EQ(runs[2].local0, 0u);
  EXPECT_EQ(runs[2].row1, 720u);
  EXPECT_EQ(t.range(runs[0]).offset, 300u * 3000);
  EXPECT_EQ(t.range(runs[0]).size, 49u * 3000);
  EXPECT_TRUE(t.runs(5, 5).empty());
  expect_error([&] { t.runs(10, 1001); }, "rows [10, 1001) of 1000");

  TiledTensor aligned(*ctx, "kv", 1000, 3000, {.row_align = 16});
  EXPECT_EQ(aligned.rows_per_piece(), 336u);
  EXPECT_EQ(aligned.pieces(), 3u);
  TiledTensor small(*ctx, "small", 7, 3000, {.row_align = 64});  // one piece: no alignment
  EXPECT_EQ(small.pieces(), 1u);
  TiledTensor empty(*ctx, "empty", 0, 16);
  EXPECT_EQ(empty.pieces(), 0u);

  expect_error([&] { TiledTensor big(*ctx, "blk.0.wide", 2, 2 * MiB); },
               "tensor blk.0.wide: one row is 2097152 bytes, more than the binding limit of "
               "1048576 bytes; raise --max-buffer-mb");
  expect_error([&] { TiledTensor k(*ctx, "kv", 1000, 3000, {.row_align = 512}); },
               "512 rows of 3000 bytes");
}

// Random bytes, uploaded whole and in odd ranges, come back the same.
void round_trip(Context& ctx, uint64_t rows, uint64_t row_bytes, const TileOptions& opt,
                size_t min_pieces) {
  SCOPED_TRACE(testing::Message() << rows << " rows of " << row_bytes << " bytes, row_align "
                                  << opt.row_align << ", map " << ctx.options().map_device_memory);
  TiledTensor t(ctx, "rt", rows, row_bytes, opt);
  EXPECT_GE(t.pieces(), min_pieces);
  const bool mapped = ctx.caps().uma && ctx.options().map_device_memory;
  EXPECT_EQ(t.piece(0).buffer.mapped() != nullptr, mapped);  // else staged
  std::mt19937 rng(uint32_t(rows * 31 + row_bytes));
  std::vector<unsigned char> host(rows * row_bytes), back(rows * row_bytes, 0xee);
  for (auto& b : host) b = static_cast<unsigned char>(rng());
  t.upload(0, rows, host.data());
  t.download(0, rows, back.data());
  EXPECT_EQ(host, back);

  // Partial ranges across piece edges.
  const uint64_t a = rows / 3, n = rows / 2;
  std::vector<unsigned char> part(n * row_bytes);
  for (auto& b : part) b = static_cast<unsigned char>(rng());
  t.upload(a, n, part.data());
  std::memcpy(host.data() + a * row_bytes, part.data(), part.size());
  std::fill(back.begin(), back.end(), 0);
  t.download(0, rows, back.data());
  EXPECT_EQ(host, back);
  std::vector<unsigned char> one(row_bytes);
  t.download(rows - 1, 1, one.data());
  EXPECT_EQ(0, std::memcmp(one.data(), host.data() + (rows - 1) * row_bytes, row_bytes));

  t.fill_zero();
  t.download(0, rows, back.data());
  EXPECT_TRUE(std::all_of(back.begin(), back.end(), [](unsigned char b) { return b == 0; }));
}

TEST_F(VulkanCore, TiledTensorRoundTrips) {
  for (bool map : {true, false}) {  // mapped pieces, then staging
    auto ctx = open(1 * MiB, map);
    round_trip(*ctx, 1001, 3000, {}, 3);                        // 1 MiB pieces, odd row count
    round_trip(*ctx, 4099, 1500, {.row_align = 64}, 6);         // aligned pieces
    round_trip(*ctx, 1001, 52, {.max_piece_bytes = 4096}, 13);  // many tiny pieces
    round_trip(*ctx, 333, 7, {.row_align = 5, .max_piece_bytes = 512}, 5);  // unaligned rows
  }
}

struct AxpyPush {
  uint32_t n;
  float a;
};

// y = a * x + y over two tensors of the same tiling, one dispatch per piece.
void axpy(Sequence& seq, const Pipeline& p, const TiledTensor& x, const TiledTensor& y, float a) {
  for (size_t i = 0; i < x.pieces(); ++i) {
    const uint32_t n = uint32_t(x.piece(i).rows() * x.row_bytes() / 4);
    seq.dispatch(p, {x.range(i), y.range(i)}, AxpyPush{n, a}, (n + 63) / 64);
  }
}

std::vector<float> small_ints(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (float& f : v) f = float(int(rng() % 17) - 8);  // exact in float, whatever the rounding
  return v;
}

TEST_F(VulkanCore, DispatchOverPieces) {
  auto ctx = open();
  const uint64_t rows = 1000, cols = 37;
  const TileOptions opt{.max_piece_bytes = 4096};
  TiledTensor x(*ctx, "x", rows, cols * 4, opt), y(*ctx, "y", rows, cols * 4, opt);
  ASSERT_GT(x.pieces(), 30u);
  const std::vector<float> hx = small_ints(rows * cols, 1), hy = small_ints(rows * cols, 2);
  x.upload(0, rows, hx.data());
  y.upload(0, rows, hy.data());

  const Pipeline& p = ctx->pipeline({.shader = "test_axpy",
                                     .bindings = 2,
                                     .push_bytes = sizeof(AxpyPush),
                                     .spec = {64},
                                     .readonly = 0b01});
  Sequence seq(*ctx);
  axpy(seq, p, x, y, 3.0f);
  EXPECT_EQ(seq.commands(), x.pieces());
  EXPECT_EQ(seq.barriers(), 0u);  // every piece is its own buffer: nothing to order
  seq.submit_and_wait();

  std::vector<float> out(rows * cols);
  y.download(0, rows, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 3.0f * hx[i] + hy[i]) << i;

  // Run the same recording again: y += 3x once more.
  seq.submit_and_wait();
  y.download(0, rows, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 6.0f * hx[i] + hy[i]) << i;
}

TEST_F(VulkanCore, SequenceOfDependentDispatches) {
  auto ctx = open();
  const uint32_t n = 5000;
  Buffer x(*ctx, n * 4, MemoryKind::Device, "'x'"), y(*ctx, n * 4, MemoryKind::Device, "'y'");
  Buffer z(*ctx, n * 4, MemoryKind::Device, "'z'");
  Buffer hx(*ctx, n * 4, MemoryKind::Host, "'hx'"), hy(*ctx, n * 4, MemoryKind::Host, "'hy'");
  const std::vector<float> vx = small_ints(n, 3), vy = small_ints(n, 4);
  std::memcpy(hx.mapped(), vx.data(), n * 4);
  std::memcpy(hy.mapped(), vy.data(), n * 4);

  const PipelineDesc desc{
      .shader = "test_axpy", .bindings = 2, .push_bytes = 8, .spec = {128}, .readonly = 0b01};
  const Pipeline& p = ctx->pipeline(desc);
  Sequence seq(*ctx);
  seq.copy(hx, x);
  seq.copy(hy, y);
  seq.copy(hy, z);
  for (int k = 0; k < 3; ++k) seq.dispatch(p, {x, y}, AxpyPush{n, 2.0f}, (n + 127) / 128);
  const size_t chained = seq.barriers();
  seq.dispatch(p, {x, z}, AxpyPush{n, -1.0f}, (n + 127) / 128);  // reads x only: no barrier
  EXPECT_EQ(seq.barriers(), chained);
  seq.copy(y, hy);
  seq.copy(z, hx);
  // copies -> first dispatch, then one barrier between each pair of dispatches on y, and one
  // before the copies out.
  EXPECT_EQ(chained, 3u);
  EXPECT_EQ(seq.barriers(), 4u);
  EXPECT_EQ(seq.commands(), 9u);
  seq.submit_and_wait();

  const float* ry = static_cast<const float*>(hy.mapped());
  const float* rz = static_cast<const float*>(hx.mapped());
  for (uint32_t i = 0; i < n; ++i) {
    ASSERT_EQ(ry[i], 6.0f * vx[i] + vy[i]) << i;
    ASSERT_EQ(rz[i], -vx[i] + vy[i]) << i;
  }

  // After reset the sequence records anew.
  seq.reset();
  EXPECT_EQ(seq.commands(), 0u);
  seq.fill_zero(y);
  seq.copy(y, hy);
  seq.submit_and_wait();
  EXPECT_EQ(ry[0], 0.0f);
  EXPECT_EQ(ry[n - 1], 0.0f);
}

// A recording equal to the last one submits the command buffers recorded then; the first
// command that differs (a push constant, a group count, a range, a buffer made anew) records
// its chunk from its start, and every result stays that of a fresh recording.
TEST_F(VulkanCore, SequenceReplaysARecordingEqualToTheLast) {
  const ScopedEnv on("TRIT_VK_REPLAY", nullptr);  // replay as by default, whatever the caller set
  auto ctx = open();
  if (!ctx->caps().enabled.push_descriptor) GTEST_SKIP() << "replay needs push descriptors";
  const uint64_t rows = 1000, cols = 37;
  const TileOptions opt{.max_piece_bytes = 1024};
  TiledTensor x(*ctx, "x", rows, cols * 4, opt);
  auto y = std::make_unique<TiledTensor>(*ctx, "y", rows, cols * 4, opt);
  ASSERT_GT(x.pieces(), 120u);  // several chunks: 8, 16, 32, 64, ...
  const Pipeline& p = ctx->pipeline({.shader = "test_axpy",
                                     .bindings = 2,
                                     .push_bytes = sizeof(AxpyPush),
                                     .spec = {64},
                                     .readonly = 0b01});
  std::vector<float> hy = small_ints(rows * cols, 2);
  y->upload(0, rows, hy.data());
  Sequence seq(*ctx);
  // y += a[i] * x over the first `pieces` pieces (a[i] = a for all but piece `odd`, which
  // takes a + 1), with x's contents new each time; then the expected y.
  uint32_t seed = 10;
  auto step = [&](size_t pieces, float a, size_t odd) {
    const std::vector<float> hx = small_ints(rows * cols, ++seed);
    x.upload(0, rows, hx.data());
    for (size_t i = 0; i < pieces; ++i) {
      const uint32_t n = uint32_t(x.piece(i).rows() * x.row_bytes() / 4);
      const float ai = i == odd ? a + 1 : a;
      seq.dispatch(p, {x.range(i), y->range(i)}, AxpyPush{n, ai}, (n + 63) / 64);
      const uint64_t e0 = x.piece(i).row0 * cols, e1 = x.piece(i).row1 * cols;
      for (uint64_t e = e0; e < e1; ++e) hy[e] += ai * hx[e];
    }
    seq.submit_and_wait();
    const size_t replayed = seq.replayed();
    seq.reset();
    std::vector<float> out(rows * cols);
    y->download(0, rows, out.data());
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] != hy[i]) {
        ADD_FAILURE() << "element " << i << ": " << out[i] << ", expected " << hy[i];
        break;
      }
    }
    return replayed;
  };
  const size_t all = x.pieces(), none = all;  // `none`: no odd piece
  EXPECT_EQ(step(all, 1, none), 0u);          // nothing to replay yet
  EXPECT_EQ(step(all, 1, none), all);
  EXPECT_EQ(step(all, 1, 70), 70u);  // piece 70's push constant differs (the fourth chunk)
  EXPECT_EQ(step(all, 1, 70), all);
  EXPECT_EQ(step(all, 1, 3), 3u);           // the first chunk
  EXPECT_EQ(step(all - 9, 1, 3), all - 9);  // a prefix of the last: every command matched
  EXPECT_EQ(step(all, 1, 3), all - 9);      // longer than the last
  EXPECT_EQ(step(all, -2, none), 0u);
  // A buffer made anew (the driver may give it the old handle) is never taken for the old.
  y->download(0, rows, hy.data());
  y.reset();
  y = std::make_unique<TiledTensor>(*ctx, "y", rows, cols * 4, opt);
  y->upload(0, rows, hy.data());
  EXPECT_EQ(step(all, -2, none), 0u);
  EXPECT_EQ(step(all, -2, none), all);
  {
    ScopedEnv off("TRIT_VK_REPLAY", "0");
    Sequence plain(*ctx);
    for (int k = 0; k < 2; ++k) {
      axpy(plain, p, x, *y, 1.0f);
      plain.submit_and_wait();
      EXPECT_EQ(plain.replayed(), 0u);
      plain.reset();
    }
  }
}

TEST_F(VulkanCore, PipelineRegistryAndSpecialization) {
  auto ctx = open();
  const size_t before = ctx->pipeline_count();
  PipelineDesc d{.shader = "test_axpy_bias",
                 .bindings = 2,
                 .push_bytes = 8,
                 .spec = {32, 5},
                 .readonly = 0b01};
  const Pipeline& a = ctx->pipeline(d);
  EXPECT_EQ(&a, &ctx->pipeline(d));  // built once
  d.spec = {32, 7};
  const Pipeline& b = ctx->pipeline(d);
  EXPECT_NE(&a, &b);
  EXPECT_EQ(ctx->pipeline_count(), before + 2);
  d.bindings = 3;
  expect_error([&] { ctx->pipeline(d); }, "test_axpy_bias:32:7");
  expect_error(
      [&] {
        ctx->pipeline(
            {.shader = "nope", .bindings = 1, .push_bytes = 0, .spec = {}, .readonly = 0});
      },
      "no embedded shader 'nope'");

  const uint32_t n = 100;
  Buffer x(*ctx, n * 4, MemoryKind::Host, "'x'"), y(*ctx, n * 4, MemoryKind::Host, "'y'");
  std::vector<float> ones(n, 1.0f);
  std::memcpy(x.mapped(), ones.data(), n * 4);
  std::memset(y.mapped(), 0, n * 4);
  Sequence seq(*ctx);
  seq.dispatch(a, {x, y}, AxpyPush{n, 2.0f}, (n + 31) / 32);  // + 5
  seq.dispatch(b, {x, y}, AxpyPush{n, 1.0f}, (n + 31) / 32);  // + 7
  seq.submit_and_wait();
  const float* r = static_cast<const float*>(y.mapped());
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(r[i], 2.0f + 5.0f + 1.0f + 7.0f) << i;
}

TEST_F(VulkanCore, DispatchChecksItsArguments) {
  auto ctx = open(1 * MiB);
  const Pipeline& p = ctx->pipeline(
      {.shader = "test_axpy", .bindings = 2, .push_bytes = 8, .spec = {64}, .readonly = 1});
  Buffer a(*ctx, 4096, MemoryKind::Device, "'a'"), big(*ctx, 2 * MiB, MemoryKind::Device, "'big'");
  Sequence seq(*ctx);
  expect_error([&] { seq.dispatch(p, {a}, AxpyPush{1, 1}, 1); }, "1 bindings given");
  expect_error([&] { seq.dispatch(p, {a, a}, nullptr, 4, 1); }, "4 push-constant bytes");
  expect_error(
      [&] {
        seq.dispatch(p, {a, big}, AxpyPush{1, 1}, 1);
      },
      "more than the binding limit");
  expect_error([&] { seq.dispatch(p, {a, BufferRange(a, 4, 64)}, AxpyPush{1, 1}, 1); }, "offset 4");
  expect_error(
      [&] {
        seq.dispatch(p, {a, BufferRange(a, 0, 8192)}, AxpyPush{1, 1}, 1);
      },
      "of buffer 'a'");
  expect_error([&] { seq.dispatch(p, {a, a}, AxpyPush{1, 1}, 0); }, "0 groups");
  expect_error([&] { seq.copy(a, big); }, "copy of 4096 bytes");
  expect_error([&] { seq.copy(BufferRange(a, 0, 64), BufferRange(a, 32, 64)); }, "overlap");
  EXPECT_EQ(seq.commands(), 0u);
}

}  // namespace
}  // namespace trit::engine::vk
