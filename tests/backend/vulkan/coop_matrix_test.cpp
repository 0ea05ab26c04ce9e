// Cooperative matrices for the int8 ternary products: without a device, which shape and tiles
// a device's lists give and the KHR form of the module derived from the NV one; on a device that
// offers them, the tiled products give the plain path's bits.
#include "backend/vulkan/coop_matrix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/vulkan/context.h"
#include "backend/vulkan/device_info.h"
#include "backend/vulkan/pipeline.h"
#include "backend/vulkan/push_constants.h"
#include "backend/vulkan/sequence.h"
#include "backend/vulkan/shaders.h"
#include "backend/vulkan/spirv_coopmat.h"
#include "backend/vulkan/tiled_tensor.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "support/errors.h"
#include "support/vulkan.h"

namespace trit::engine::vk {
namespace {

using test::expect_error;
using test::ScopedEnv;

// ---- The KHR form of the cooperative-matrix module ------------------------------------------

// A module's instructions: opcode and operand words.
struct SpirvInst {
  uint32_t op;
  std::vector<uint32_t> w;  // operands
};
std::vector<SpirvInst> spirv_insts(std::span<const uint32_t> m) {
  std::vector<SpirvInst> out;
  for (size_t i = 5; i < m.size();) {
    const uint32_t n = m[i] >> 16;
    EXPECT_GT(n, 0u);
    if (n == 0 || i + n > m.size()) break;
    out.push_back({m[i] & 0xffff, std::vector<uint32_t>(m.begin() + i + 1, m.begin() + i + n)});
    i += n;
  }
  return out;
}

TEST(VulkanSpirvCoopmat, KhrFormOfTheCoopModule) {
  namespace sp = spirv;
  const std::span<const uint32_t> nv = shader_spirv("matmul_ternary_coop");
  const std::span<const uint32_t> khr = shader_spirv("matmul_ternary_coop_khr");
  EXPECT_EQ(khr.data(), shader_spirv("matmul_ternary_coop_khr").data());  // derived once
  EXPECT_EQ(khr[3], nv[3] + 3);  // three new ids: the constants 0, 1, 2
  const std::vector<SpirvInst> a = spirv_insts(nv), b = spirv_insts(khr);
  EXPECT_EQ(b.size(), a.size() + 3);
  std::map<uint32_t, uint32_t> constant, type_of, use, component;
  std::map<uint32_t, bool> int_signed;
  int nv_ops = 0, loads = 0, stores = 0, muladds = 0;
  bool capability = false, extension = false;
  for (const SpirvInst& i : b) {
    if (i.op >= sp::kOpTypeCooperativeMatrixNV && i.op <= sp::kOpCooperativeMatrixLengthNV)
      ++nv_ops;
    if (i.op == 17) {  // OpCapability
      EXPECT_NE(i.w[0], sp::kCapabilityCooperativeMatrixNV);
      capability |= i.w[0] == sp::kCapabilityCooperativeMatrixKHR;
    }
    if (i.op == 10) {  // OpExtension
      const std::string name(reinterpret_cast<const char*>(i.w.data()));
      EXPECT_NE(name, "SPV_NV_cooperative_matrix");
      extension |= name == "SPV_KHR_cooperative_matrix";
    }
    if (i.op == 21) int_signed[i.w[0]] = i.w[2] != 0;  // OpTypeInt
    if (i.op == 43) constant[i.w[1]] = i.w[2];         // OpConstant (32-bit)
    if (i.op == sp::kOpTypeCooperativeMatrixKHR) {
      ASSERT_EQ(i.w.size(), 6u);
      ASSERT_TRUE(constant.count(i.w[5])) << "Use is not a constant declared before the type";
      use[i.w[0]] = constant[i.w[5]];
      component[i.w[0]] = i.w[1];
    }
    if (i.op == sp::kOpCooperativeMatrixLoadKHR) {
      ++loads;
      ASSERT_GE(i.w.size(), 5u);
      type_of[i.w[1]] = i.w[0];
      ASSERT_TRUE(constant.count(i.w[3]));
      // A (weights) is row-major, B (a token's k values in a row) column-major.
      EXPECT_EQ(constant[i.w[3]], use[i.w[0]] == sp::kUseA ? sp::kRowMajor : sp::kColumnMajor);
    }
    if (i.op == sp::kOpCooperativeMatrixStoreKHR) {
      ++stores;
      ASSERT_GE(i.w.size(), 4u);
      EXPECT_EQ(constant[i.w[2]], sp::kColumnMajor);  // the sums, token-major
    }
    if (i.op == sp::kOpCooperativeMatrixMulAddKHR) {
      ++muladds;
      ASSERT_EQ(i.w.size(), 6u);
      EXPECT_EQ(use[i.w[0]], sp::kUseAccumulator);
      EXPECT_EQ(i.w[5], sp::kSignedA | sp::kSignedB | sp::kSignedC | sp::kSignedResult);
    }
    if (i.op == 61 && use.count(i.w[0])) type_of[i.w[1]] = i.w[0];  // OpLoad of a matrix
  }
  EXPECT_EQ(nv_ops, 0);
  EXPECT_TRUE(capability);
  EXPECT_TRUE(extension);
  EXPECT_GT(loads, 0);
  EXPECT_GT(stores, 0);
  EXPECT_GT(muladds, 0);
  // A and B: int8 matrices of their own types; the accumulator int32.
  int uses[3] = {0, 0, 0};
  for (const auto& [type, u] : use) {
    ASSERT_LT(u, 3u);
    ++uses[u];
    EXPECT_TRUE(int_signed.count(component[type]) && int_signed[component[type]]);
  }
  EXPECT_EQ(uses[sp::kUseA], 1);
  EXPECT_EQ(uses[sp::kUseB], 1);
  EXPECT_EQ(uses[sp::kUseAccumulator], 1);
}

TEST(VulkanSpirvCoopmat, RefusesWhatItCannotRewrite) {
  expect_error([] { coopmat_nv_to_khr(std::vector<uint32_t>{1, 2, 3}); }, "not a SPIR-V module");
  const std::span<const uint32_t> plain = shader_spirv("add");
  expect_error([&] { coopmat_nv_to_khr(plain); }, "no cooperative matrix");
  const std::span<const uint32_t> coop = shader_spirv("matmul_ternary_coop");
  std::vector<uint32_t> bad(coop.begin(), coop.end());
  bad[5] = 0xffffu << 16 | (bad[5] & 0xffff);  // the first instruction claims 65535 words
  expect_error([&] { coopmat_nv_to_khr(bad); }, "claims 65535 words");
  bad.assign(coop.begin(), coop.begin() + 5);  // a header alone
  expect_error([&] { coopmat_nv_to_khr(bad); }, "no cooperative matrix");
  expect_error([] { shader_spirv("add_khr"); }, "no cooperative matrix");
  expect_error([] { shader_spirv("nothing_khr"); }, "no embedded shader");
}

// A device as the NVIDIA driver describes a recent GPU: int8 shapes 16x8x32 and 16x16x32.
VulkanDeviceInfo coop_device() {
  VulkanDeviceInfo d;
  d.cooperative_matrix_nv = true;
  d.cooperative_matrix_int8 = {{16, 8, 32}, {16, 16, 32}};
  d.shader_int8 = true;
  d.vulkan_memory_model = true;
  d.subgroup_size = 32;
  d.subgroup_operations = VK_SUBGROUP_FEATURE_BASIC_BIT;
  d.max_compute_work_group_invocations = 1024;
  d.max_compute_work_group_size[0] = 1024;
  d.max_compute_shared_memory_size = 48 * 1024;
  return d;
}

TEST(VulkanCoopTiles, FirstUsableShapeOfTheDevice) {
  const std::optional<CoopTiles> t = plan_coop_tiles(coop_device());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->shape, (CoopMatShape{16, 8, 32}));
  EXPECT_EQ(t->wg, 128u);  // 2 x 2 subgroups of 32
  EXPECT_EQ(t->frag_m, 2u);
  EXPECT_EQ(t->frag_n, 4u);
  EXPECT_EQ(t->shared_bytes(), 4u * 68 * 128);
  const std::vector<uint32_t> spec = t->spec();
  ASSERT_EQ(spec.size(), 17u);
  EXPECT_EQ(spec[0], 128u);
  EXPECT_EQ(spec[4], 64u);
  EXPECT_EQ(spec[5], 64u);
  EXPECT_EQ(spec[6], 2u);
  EXPECT_EQ(spec[7], 4u);
  EXPECT_EQ((std::vector<uint32_t>(spec.begin() + 14, spec.end())),
            (std::vector<uint32_t>{16, 8, 32}));
  // Small grids: 32 x 32 tiles, 16 x 16 a subgroup.
  const CoopTiles s = t->small();
  EXPECT_EQ(s.tile_m, 32u);
  EXPECT_EQ(s.tile_n, 32u);
  EXPECT_EQ(s.frag_m, 1u);
  EXPECT_EQ(s.frag_n, 2u);
  EXPECT_EQ(s.wg, 128u);

  // Shapes the module cannot tile are passed over: m or n not dividing 32, k not dividing 256.
  VulkanDeviceInfo d = coop_device();
  d.cooperative_matrix_int8 = {{64, 8, 32}, {16, 48, 32}, {16, 8, 12}, {8, 8, 16}};
  const std::optional<CoopTiles> small = plan_coop_tiles(d);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->shape, (CoopMatShape{8, 8, 16}));
  EXPECT_EQ(small->frag_m, 4u);
  EXPECT_EQ(small->frag_n, 4u);
  d.cooperative_matrix_int8 = {{32, 8, 32}};  // too tall for small tiles: it keeps its own
  ASSERT_TRUE(plan_coop_tiles(d).has_value());
  EXPECT_EQ(plan_coop_tiles(d)->small().tile_m, 64u);
  d.cooperative_matrix_int8 = {{64, 8, 32}};
  EXPECT_FALSE(plan_coop_tiles(d).has_value());
}

TEST(VulkanCoopTiles, SmallTilesWhereSharedMemoryIsSmall) {
  VulkanDeviceInfo d = coop_device();
  d.max_compute_shared_memory_size = 32 * 1024;  // 64 x 64 tiles need 34,816 bytes
  const std::optional<CoopTiles> t = plan_coop_tiles(d);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->tile_m, 32u);
  EXPECT_EQ(t->tile_n, 32u);
  EXPECT_LE(t->shared_bytes(), 32u * 1024);
  EXPECT_EQ(t->small().tile_m, 32u);
  d.cooperative_matrix_int8 = {{32, 8, 32}};  // no small tiles for this shape
  EXPECT_FALSE(plan_coop_tiles(d).has_value());
}

TEST(VulkanCoopTiles, KhrFirstUnlessChosen) {
  VulkanDeviceInfo d = coop_device();
  d.cooperative_matrix_khr = true;
  d.cooperative_matrix_int8_khr = {{16, 16, 32}};
  ASSERT_TRUE(plan_coop_tiles(d).has_value());
  EXPECT_TRUE(plan_coop_tiles(d)->khr);
  EXPECT_EQ(plan_coop_tiles(d)->shape, (CoopMatShape{16, 16, 32}));
  EXPECT_EQ(plan_coop_tiles(d)->shader(), "matmul_ternary_coop_khr");
  EXPECT_FALSE(plan_coop_tiles(d, CoopChoice::Nv)->khr);
  EXPECT_EQ(plan_coop_tiles(d, CoopChoice::Nv)->shader(), "matmul_ternary_coop");
  EXPECT_FALSE(plan_coop_tiles(d, CoopChoice::Off).has_value());
  // KHR without a usable int8 shape: NV under Auto, nothing when KHR is asked for.
  d.cooperative_matrix_int8_khr = {{16, 16, 12}};
  EXPECT_FALSE(plan_coop_tiles(d)->khr);
  EXPECT_FALSE(plan_coop_tiles(d, CoopChoice::Khr).has_value());
  d.cooperative_matrix_nv = false;
  EXPECT_FALSE(plan_coop_tiles(d).has_value());
}

TEST(VulkanCoopTiles, ChoiceFromTheEnvironment) {
  for (const auto& [value, want] : {std::pair{"0", CoopChoice::Off},
                                    {"nv", CoopChoice::Nv},
                                    {"khr", CoopChoice::Khr},
                                    {"1", CoopChoice::Auto},
                                    {"", CoopChoice::Auto}}) {
    ScopedEnv env("TRIT_VK_COOPMAT", value);
    EXPECT_EQ(coop_choice_from_env(), want) << value;
  }
  ScopedEnv unset("TRIT_VK_COOPMAT", nullptr);
  EXPECT_EQ(coop_choice_from_env(), CoopChoice::Auto);
  for (const auto& [value, want] :
       {std::pair{"1", true}, {"0", false}, {"yes", false}, {"", false}}) {
    ScopedEnv env("TRIT_VK_EXACT", value);
    EXPECT_EQ(exact_training_from_env(), want) << value;
  }
  ScopedEnv no_exact("TRIT_VK_EXACT", nullptr);
  EXPECT_FALSE(exact_training_from_env());
}

TEST(VulkanCoopTiles, NoneWithoutEveryFeatureOrRoom) {
  ASSERT_TRUE(plan_coop_tiles(coop_device()).has_value());
  std::vector<VulkanDeviceInfo> lacking(8, coop_device());
  lacking[0].cooperative_matrix_nv = false;
  lacking[1].cooperative_matrix_int8.clear();
  lacking[2].shader_int8 = false;
  lacking[3].vulkan_memory_model = false;
  lacking[4].subgroup_operations = 0;
  lacking[5].subgroup_size = 0;
  lacking[6].max_compute_shared_memory_size = 16 * 1024;  // 17,408 bytes for 32 x 32 tiles
  lacking[7].subgroup_size = 64;                          // 256 invocations
  lacking[7].max_compute_work_group_invocations = 128;
  for (size_t i = 0; i < lacking.size(); ++i) {
    EXPECT_FALSE(plan_coop_tiles(lacking[i]).has_value()) << "case " << i;
  }
}

// The f16 tiles: the first shape whose m divides 32, n divides 64 (a multiple of 8) and k
// divides 32 (a multiple of 8), of the extension asked for; nothing without shaderFloat16.
TEST(VulkanCoopTiles, F16ShapesForTheTransposedProduct) {
  VulkanDeviceInfo d = coop_device();
  d.shader_float16 = true;
  d.cooperative_matrix_f16 = {{16, 16, 16}, {16, 8, 16}};
  std::optional<CoopF16Tiles> t = plan_coop_f16_tiles(d, false);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->shape, (CoopMatShape{16, 16, 16}));
  EXPECT_EQ(t->wg, 128u);
  EXPECT_EQ(t->frag_m, 2u);  // 32 tokens a subgroup
  EXPECT_EQ(t->frag_n, 4u);  // 64 columns
  EXPECT_EQ(t->shader(), "matmul_ternary_t_coop");
  const std::vector<uint32_t> spec = t->spec();
  ASSERT_EQ(spec.size(), 17u);
  EXPECT_EQ(spec[0], 128u);
  EXPECT_EQ(spec[6], 2u);
  EXPECT_EQ(spec[7], 4u);
  EXPECT_EQ((std::vector<uint32_t>(spec.begin() + 14, spec.end())),
            (std::vector<uint32_t>{16, 16, 16}));
  d.cooperative_matrix_f16 = {{16, 4, 16}, {16, 16, 12}, {64, 8, 16}, {8, 8, 8}};
  t = plan_coop_f16_tiles(d, false);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->shape, (CoopMatShape{8, 8, 8}));
  EXPECT_EQ(t->frag_m, 4u);
  EXPECT_EQ(t->frag_n, 8u);
  EXPECT_FALSE(plan_coop_f16_tiles(d, true).has_value());  // no KHR extension
  d.cooperative_matrix_khr = true;
  d.cooperative_matrix_f16_khr = {{16, 8, 16}};
  ASSERT_TRUE(plan_coop_f16_tiles(d, true).has_value());
  EXPECT_EQ(plan_coop_f16_tiles(d, true)->shader(), "matmul_ternary_t_coop_khr");
  d.shader_float16 = false;
  EXPECT_FALSE(plan_coop_f16_tiles(d, false).has_value());
  EXPECT_FALSE(plan_coop_f16_tiles(d, true).has_value());
  // The module's KHR form: A (tokens x k), B (k x columns) and the f32 sums take one use each.
  const std::vector<uint32_t> khr = coopmat_nv_to_khr(shader_spirv("matmul_ternary_t_coop"));
  EXPECT_GT(khr.size(), 100u);
  EXPECT_FALSE(shader_spirv("matmul_ternary_t_coop_khr").empty());
}

// ---- The fast path's plain modules, on any device (lavapipe in CI) --------------------------
// dy_to_f16 and transposed_reduce need no cooperative matrix: their arithmetic is checked here
// against the host, so that CI covers them.

std::unique_ptr<Context> open_context() {
  ContextOptions o;
  o.device = DeviceChoice::any();
  return std::make_unique<Context>(o);
}

std::vector<float> download_floats(const TiledTensor& t, uint64_t n) {
  std::vector<float> v(n);
  t.download(0, 1, v.data());
  return v;
}

// Each row's scale: the power of two that brings its largest magnitude into [2^14, 2^15)
// (frexp on the host), 1 for rows of zeros, infinities or NaNs; the halves rounded to nearest
// even as the CPU rounds them (f32_to_fp16), zeros past the row's end.
TEST(VulkanF16Prepass, DyRowsBecomeScaledHalves) {
  REQUIRE_VULKAN_DEVICE();
  const auto ctx = open_context();
  const uint32_t tokens = 7, n = 301, stride = 305, words = 152;  // one word of padding a row
  std::vector<float> dy = test::randn(int64_t(tokens) * stride, 701);
  const float sizes[tokens] = {0x1p-30f, 1.0f, 0x1p20f, 0.0f, 1.0f, 1.0f, 0x1p-100f};
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t j = 0; j < stride; ++j) dy[t * stride + j] *= sizes[t];
  }
  dy[4 * stride + 17] = std::nanf("");
  dy[5 * stride + 3] = -INFINITY;
  TiledTensor tdy(*ctx, "dy", 1, dy.size() * 4), tdyh(*ctx, "dyh", 1, tokens * words * 4),
      tscale(*ctx, "tscale", 1, tokens * 4);
  tdy.upload(0, 1, dy.data());
  const Pipeline& p = ctx->pipeline({.shader = "dy_to_f16",
                                     .bindings = 3,
                                     .push_bytes = sizeof(DyToF16Push),
                                     .spec = {128},
                                     .readonly = 0b001});
  Sequence seq(*ctx);
  seq.dispatch(p, {tdy.range(0), tdyh.range(0), tscale.range(0)},
               DyToF16Push{tokens, n, stride, words}, tokens);
  seq.submit_and_wait();
  std::vector<uint32_t> dyh(tokens * words);
  tdyh.download(0, 1, dyh.data());
  const std::vector<float> scale = download_floats(tscale, tokens);
  for (uint32_t t = 0; t < tokens; ++t) {
    float m = 0;
    bool finite = true;
    for (uint32_t j = 0; j < n; ++j) {
      const float a = std::fabs(dy[t * stride + j]);
      finite = finite && std::isfinite(a);
      m = std::max(m, a);
    }
    int k = 0;
    std::frexp(m, &k);
    const int e = m > 0 && finite ? std::clamp(15 - k, -100, 100) : 0;
    EXPECT_EQ(scale[t], std::ldexp(1.0f, -e)) << "token " << t;
    for (uint32_t j = 0; j < 2 * words; ++j) {
      const float v = j < n ? std::ldexp(dy[t * stride + j], e) : 0.0f;
      const uint16_t got = uint16_t(dyh[t * words + j / 2] >> (16 * (j % 2)));
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(fp16_to_f32(got))) << "token " << t << " value " << j;
      } else {
        ASSERT_EQ(got, f32_to_fp16(v)) << "token " << t << " value " << j << " (" << v << ")";
      }
    }
  }
}

// transposed_reduce: s = (first ? 0 : acc) + the splits in order; the last piece adds
// scale * (dq * (tscale * s)) to dx, the others store s in acc.
TEST(VulkanF16Prepass, TheSplitsAddUpInOrder) {
  REQUIRE_VULKAN_DEVICE();
  const auto ctx = open_context();
  const uint32_t tokens = 5, n_in = 300, splits = 3, count = tokens * n_in;
  const std::vector<float> part = test::randn(splits * count, 711), acc0 = test::randn(count, 712),
                           dx0 = test::randn(count, 713);
  const std::vector<float> ts = {0.5f, 0x1p-20f, 2.0f, 1.0f, 0x1p-40f};
  const float dq = 0.03125f, scale = 1.25f;
  const Pipeline& p = ctx->pipeline({.shader = "transposed_reduce",
                                     .bindings = 4,
                                     .push_bytes = sizeof(TransposedReducePush),
                                     .spec = {256},
                                     .readonly = 0b0011});
  for (const auto& [first, last] : {std::pair{1u, 1u}, {0u, 1u}, {1u, 0u}}) {
    TiledTensor tpart(*ctx, "part", 1, part.size() * 4), tts(*ctx, "ts", 1, tokens * 4),
        tacc(*ctx, "acc", 1, count * 4), tdx(*ctx, "dx", 1, count * 4);
    tpart.upload(0, 1, part.data());
    tts.upload(0, 1, ts.data());
    tacc.upload(0, 1, acc0.data());
    tdx.upload(0, 1, dx0.data());
    Sequence seq(*ctx);
    seq.dispatch(p, {tpart.range(0), tts.range(0), tacc.range(0), tdx.range(0)},
                 TransposedReducePush{tokens, n_in, splits, dq, scale, first, last},
                 (count + 255) / 256);
    seq.submit_and_wait();
    const std::vector<float> acc = download_floats(tacc, count), dx = download_floats(tdx, count);
    for (uint32_t o = 0; o < count; ++o) {
      float s = first ? 0.0f : acc0[o];
      for (uint32_t k = 0; k < splits; ++k) s += part[k * count + o];
      if (last) {
        const float term = scale * (dq * (ts[o / n_in] * s));
        const float want = dx0[o] + term;
        // A device may fuse the last multiply and add: within a rounding of the larger of the
        // two (where they cancel, that is more than a rounding of the result: an H100 gave
        // 0.00674524158 for 0.00674524903).
        ASSERT_NEAR(dx[o], want, 1e-6 * (std::fabs(dx0[o]) + std::fabs(term)) + 1e-30)
            << first << last << " " << o;
        ASSERT_EQ(acc[o], acc0[o]) << o;
      } else {
        ASSERT_EQ(acc[o], s) << o;
        ASSERT_EQ(dx[o], dx0[o]) << o;
      }
    }
  }
}

using namespace test;  // NOLINT: the shared Vulkan test helpers

// ---- On a device ------------------------------------------------------------------------------
// matmul_ternary_coop sums the int8 products exactly on the device's matrix units and ends as
// matmul_ternary does, so its outputs equal the plain path's (TRIT_VK_COOPMAT=0) bit for bit.
// Devices without int8 cooperative matrices (lavapipe) skip this.

// coop: TRIT_VK_COOPMAT ("0" the plain path, "nv", "khr"); small: TRIT_VK_SMALL_TILES for both
// paths ("0" default tiles, "1" the small ones).
void open_coop(const char* coop, const char* small, uint64_t limit, bool profile,
               std::unique_ptr<Backend>* out) {
  const ScopedEnv choice("TRIT_VK_COOPMAT", coop);
  const ScopedEnv tiles("TRIT_VK_SMALL_TILES", small);
  const ScopedEnv table("TRIT_VK_PROFILE", profile ? "1" : nullptr);
  open_vulkan(limit, out);
}

// Products over token counts that leave partial tiles (and one just past the matvec path), of
// both ternary types, with an out_scale, of rows that end inside a tile, and of block scales
// (which keep the plain path); the 16 tokens of a server's full decoding step; 1,536 inputs
// (six blocks of k) at a few tokens and at more.
std::vector<Out> coop_products(Backend& b) {
  static const auto tq2 = ternary_weight(DType::TQ2_0, 768, 300, false, 501);
  static const auto scaled = ternary_weight(DType::TQ2_0, 768, 130, false, 502);
  static const auto i2s = ternary_weight(DType::I2_S, 768, 256, false, 503);
  static const auto blocks = ternary_weight(DType::TQ2_0, 768, 96, true, 504);
  static const auto wide = ternary_weight(DType::TQ2_0, 1536, 200, false, 506);
  scaled->w.out_scale = 1.25f;
  std::vector<Out> outs;
  for (int64_t n : {301, 9, 16, 64}) {
    TensorPtr x = upload(b, "x", n, 768, randn(n * 768, 505 + uint64_t(n)));
    std::vector<TensorPtr> ys;
    std::vector<LinearOp> ops;
    for (const HostWeight* w : {tq2.get(), scaled.get(), i2s.get(), blocks.get()}) {
      ys.push_back(b.tensor(cat("y_", w->w.name), n, w->w.m.n_out));
      ops.push_back({&w->w, ys.back().get(), {}});
    }
    b.linear(ops, *x, n, LinearMode{.act_quant = true});
    for (const TensorPtr& y : ys) outs.push_back(download(b, *y, n, 0));
  }
  for (int64_t n : {12, 40}) {
    TensorPtr x = upload(b, "x", n, 1536, randn(n * 1536, 507 + uint64_t(n)));
    TensorPtr y = b.tensor("y_wide", n, 200);
    const LinearOp op[] = {{&wide->w, y.get(), {}}};
    b.linear(op, *x, n, LinearMode{.act_quant = true});
    outs.push_back(download(b, *y, n, 0));
  }
  return outs;
}

TEST(VulkanCoopMatrix, TiledProductsGiveThePlainBits) {
  // Which extensions the device offers for this, independently of the backend's choice.
  const VulkanDeviceList list = enumerate_vulkan_devices();
  const VulkanDeviceInfo* info =
      list.devices.empty() ? nullptr
                           : &list.devices[choose_device(list.devices, DeviceChoice::any())];
  int ran = 0;
  for (const char* ext : {"nv", "khr"}) {
    const bool khr = ext[0] == 'k';
    const std::string tag = cat("int8 cooperative matrices (", khr ? "KHR" : "NV", ")");
    const bool offered = info && plan_coop_tiles(*info, khr ? CoopChoice::Khr : CoopChoice::Nv);
    // 32 KiB: weights in pieces of 170 rows (the second starts inside a tile), tokens in
    // segments of 10 (still the tiled path). Small tiles: 32 x 32 (plain: 32 x 16).
    for (const char* small : {"0", "1"}) {
      for (uint64_t limit : {uint64_t(0), 32 * KiB}) {
        const std::string what =
            cat(ext, " at ", limit_name(limit), small[0] == '1' ? ", small tiles" : "");
        std::unique_ptr<Backend> plain, coop;
        open_coop("0", small, limit, false, &plain);
        if (!plain) return;
        open_coop(ext, small, limit, false, &coop);
        ASSERT_EQ(coop->description().find(tag) != std::string::npos, offered)
            << coop->description();
        if (!offered) continue;
        EXPECT_EQ(plain->description().find("cooperative"), std::string::npos);
        const std::vector<Out> want = coop_products(*plain), got = coop_products(*coop);
        ASSERT_EQ(want.size(), got.size());
        for (size_t i = 0; i < want.size(); ++i) expect_match(want[i], got[i].v, 0, what);
        ++ran;
      }
    }
    ::testing::internal::CaptureStderr();
    {
      std::unique_ptr<Backend> vk;
      open_coop(ext, "0", 0, true, &vk);
      if (offered) coop_products(*vk);
    }
    const std::string table = ::testing::internal::GetCapturedStderr();
    if (!offered) continue;
    const std::string pipeline = khr ? "matmul_ternary_coop_khr:" : "matmul_ternary_coop:";
    EXPECT_NE(table.find(pipeline), std::string::npos) << ext << ":\n" << table;
  }
  if (ran == 0) GTEST_SKIP() << "no int8 cooperative matrices on this device";
}

// ---- The f16 transposed product of training ----------------------------------------------------
// matmul_ternary_t_coop (TRIT_VK_EXACT=0 on a device with f16 cooperative matrices) against the
// sums in double: dx = dx0 + out_scale * sum_r dy[t, r] w(r, c) within 2^-9 of
// out_scale * sum_r |dy[t, r] w(r, c)| (dy rounds to a half, 2^-12 relative; the sums are f32),
// and the row past the op's tokens untouched; without a limit and at 32 KiB (weights in pieces,
// tokens in segments). Both ternary types, block scales, TQ1_0 (its T2 view), an out_scale, an
// odd number of rows, f16 rows (matmul_float_t_coop, the LM head's product), gradients of very
// different sizes per token. Devices without such
// matrices (lavapipe) skip this.

struct F16Case {
  DType type;
  bool blocks;
  int64_t n, n_in, n_out;
  float out_scale;
};

// w: the case's weight, which outlives the backend (a device caches what it uploaded).
void check_f16_transposed(Backend& b, const F16Case& c, const HostWeight* w,
                          const std::string& where) {
  std::vector<float> wf(size_t(c.n_in * c.n_out));
  dequantize(c.type, w->bytes.data(), c.n_in * c.n_out, wf.data());
  std::vector<float> dy = randn((c.n + 1) * c.n_out, 602);
  // Each token's gradient at its own size, 2^-30 .. 2^20 (the scaling per row is what keeps
  // the small ones).
  for (int64_t t = 0; t <= c.n; ++t) {
    const float size = std::ldexp(1.0f, int(t % 51) - 30);
    for (int64_t r = 0; r < c.n_out; ++r) dy[size_t(t * c.n_out + r)] *= size;
  }
  const std::vector<float> dx0 = randn((c.n + 1) * c.n_in, 603);
  TensorPtr dyt = upload(b, "dy", c.n + 1, c.n_out, dy);
  TensorPtr dxt = upload(b, "dx", c.n + 1, c.n_in, dx0);
  b.linear_backward(*dxt, *dyt, w->w, c.n);
  std::vector<float> got(dx0.size());
  b.read(*dxt, 0, c.n + 1, got.data());
  int64_t bad = 0;
  double worst = 0;
  for (int64_t t = 0; t <= c.n; ++t) {
    for (int64_t col = 0; col < c.n_in; ++col) {
      const size_t o = size_t(t * c.n_in + col);
      if (t == c.n) {
        if (got[o] != dx0[o]) ++bad;
        continue;
      }
      double sum = 0, mag = 0;
      for (int64_t r = 0; r < c.n_out; ++r) {
        const double p = double(dy[size_t(t * c.n_out + r)]) * wf[size_t(r * c.n_in + col)];
        sum += p;
        mag += std::fabs(p);
      }
      const double want = dx0[o] + c.out_scale * sum;
      const double bound = std::ldexp(c.out_scale * mag, -9) + std::ldexp(std::fabs(want), -22);
      const double err = std::fabs(double(got[o]) - want);
      if (!(err <= bound)) {
        if (bad++ < 5) {
          ADD_FAILURE() << where << ": dx[" << t << ", " << col << "] = " << got[o] << ", want "
                        << want << " within " << bound << " (dx0 " << dx0[o] << ", product "
                        << c.out_scale * sum << ", got " << double(got[o]) - dx0[o] << ", dy of 2^"
                        << int(t % 51) - 30 << ")";
        }
      }
      worst = std::max(worst, err / bound);
    }
  }
  EXPECT_EQ(bad, 0) << where;
  std::printf("%s: largest error / its bound = %.3g\n", where.c_str(), worst);
}

TEST(VulkanCoopMatrix, F16TransposedProductWithinItsBound) {
  const std::vector<F16Case> cases = {
      {DType::TQ2_0, false, 77, 768, 1024, 1.25f}, {DType::TQ2_0, true, 130, 1280, 512, 1.0f},
      {DType::I2_S, false, 64, 768, 512, 0.5f},    {DType::TQ1_0, true, 33, 768, 300, 1.0f},
      {DType::TQ2_0, false, 9, 256, 301, 1.0f},    {DType::F16, false, 77, 768, 1030, 1.0f}};
  std::vector<std::unique_ptr<HostWeight>> weights;
  for (const F16Case& c : cases) {
    if (c.type == DType::F16) {  // f16 rows: the LM head's form
      auto h = std::make_unique<HostWeight>();
      h->w.f = float_matrix(h->bytes, c.type, c.n_in, c.n_out, 604, 0.05f);
      h->w.name = cat("f16_", c.n_out, "x", c.n_in);
      h->w.m = {c.type, nullptr, c.n_in, c.n_out, 0};
      weights.push_back(std::move(h));
    } else {
      weights.push_back(ternary_weight(c.type, c.n_in, c.n_out, c.blocks, 601 + uint64_t(c.n)));
    }
    weights.back()->w.out_scale = c.out_scale;
  }
  ::testing::internal::CaptureStderr();
  bool offered = false;
  for (uint64_t limit : {uint64_t(0), 32 * KiB}) {
    std::unique_ptr<Backend> vk;
    {
      const ScopedEnv fast("TRIT_VK_EXACT", "0");
      const ScopedEnv table("TRIT_VK_PROFILE", "1");
      open_vulkan(limit, &vk);
    }
    if (!vk) break;
    offered = vk->description().find("f16 training products") != std::string::npos;
    if (!offered) break;
    for (size_t i = 0; i < cases.size(); ++i) {
      const F16Case& c = cases[i];
      check_f16_transposed(*vk, c, weights[i].get(),
                           cat(dtype_name(c.type), c.blocks ? " blocks " : " ", c.n, "x", c.n_in,
                               "x", c.n_out, " at ", limit_name(limit)));
    }
  }
  const std::string table = ::testing::internal::GetCapturedStderr();
  if (!offered) GTEST_SKIP() << "no f16 cooperative matrices on this device";
  EXPECT_NE(table.find("matmul_ternary_t_coop"), std::string::npos) << table;
  EXPECT_NE(table.find("matmul_float_t_coop"), std::string::npos) << table;
}

}  // namespace
}  // namespace trit::engine::vk
