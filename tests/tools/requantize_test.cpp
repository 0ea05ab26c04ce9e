// tools/requantize: re-packing between TQ1_0, TQ2_0 and I2_S keeps every trit and scale, and
// what it refuses.
#include "tools/requantize.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "io/gguf.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/models.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::TempDir;

// The trits and scales of every linear layer of a file, in order.
struct Ternary {
  std::vector<std::vector<int8_t>> trits;
  std::vector<std::vector<float>> scales;
};
Ternary read_ternary(const std::string& path, DType expect_type) {
  auto f = GgufFile::open(path);
  Ternary r;
  for (const GgufTensor& t : f->tensors()) {
    if (!dtype_traits(t.type).ternary) continue;
    EXPECT_EQ(t.type, expect_type) << t.name;
    TernaryUnpacked u = unpack_ternary(t.type, t.data, t.n_elements());
    r.trits.push_back(std::move(u.trits));
    r.scales.push_back(std::move(u.block_scales));
  }
  return r;
}

TEST(Quantize, RoundTripKeepsTritsAndScales) {
  TempDir dir;
  create_random_model(test::tiny_options(42, DType::TQ2_0), dir.file("a_tq2.gguf"));
  const RequantizeResult r1 =
      requantize_model(dir.file("a_tq2.gguf"), dir.file("b_i2s.gguf"), DType::I2_S);
  EXPECT_EQ(r1.n_converted, 14);
  EXPECT_EQ(r1.n_copied, 10);
  requantize_model(dir.file("b_i2s.gguf"), dir.file("c_tq1.gguf"), DType::TQ1_0);
  requantize_model(dir.file("c_tq1.gguf"), dir.file("d_tq2.gguf"), DType::TQ2_0);

  const Ternary a = read_ternary(dir.file("a_tq2.gguf"), DType::TQ2_0);
  const Ternary b = read_ternary(dir.file("b_i2s.gguf"), DType::I2_S);
  const Ternary c = read_ternary(dir.file("c_tq1.gguf"), DType::TQ1_0);
  const Ternary d = read_ternary(dir.file("d_tq2.gguf"), DType::TQ2_0);
  ASSERT_EQ(a.trits.size(), 14u);
  EXPECT_EQ(a.trits, b.trits);
  EXPECT_EQ(a.trits, c.trits);
  EXPECT_EQ(a.trits, d.trits);
  EXPECT_EQ(a.scales, c.scales);
  EXPECT_EQ(a.scales, d.scales);
  for (size_t i = 0; i < a.scales.size(); ++i) {
    ASSERT_EQ(b.scales[i].size(), 1u);
    EXPECT_EQ(b.scales[i][0], a.scales[i][0]);
  }
  // Nothing else changed: the final file is the original, byte for byte.
  EXPECT_EQ(test::read_file(dir.file("a_tq2.gguf")), test::read_file(dir.file("d_tq2.gguf")));

  auto fb = GgufFile::open(dir.file("b_i2s.gguf"));
  EXPECT_EQ(fb->get_u32("general.file_type"), 40u);
  auto fc = GgufFile::open(dir.file("c_tq1.gguf"));
  EXPECT_EQ(fc->get_u32("general.file_type"), 36u);
  // Non-ternary tensors are copied byte for byte.
  auto fa = GgufFile::open(dir.file("a_tq2.gguf"));
  for (const char* name : {"token_embd.weight", "blk.1.ffn_sub_norm.weight"}) {
    const GgufTensor& x = fa->tensor(name);
    const GgufTensor& y = fc->tensor(name);
    ASSERT_EQ(x.nbytes, y.nbytes);
    EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << name;
  }
}

TEST(Quantize, RefusesPerBlockScalesToI2S) {
  TempDir dir;
  // Two blocks of nonzero trits with scales 0.5 and 0.25, plus an all-zero block with its own d
  // (which does not count).
  const int64_t n = 3 * kQK_K;
  std::vector<int8_t> trits(size_t(n), 0);
  for (int64_t i = 0; i < 2 * kQK_K; ++i) trits[size_t(i)] = int8_t(i % 3 - 1);
  const std::vector<float> scales = {0.5f, 0.25f, 4.0f};
  std::vector<uint8_t> packed(size_t(3 * 66));
  pack_tq2_0(trits.data(), scales.data(), n, packed.data());
  {
    GgufWriter w;
    w.set_string("general.architecture", "test");
    w.add_tensor("blk.0.ffn_up.weight", DType::TQ2_0, {kQK_K, 3}, packed.data());
    w.write(dir.file("mixed.gguf"));
  }
  const std::string e = error_of(
      [&] { requantize_model(dir.file("mixed.gguf"), dir.file("out.gguf"), DType::I2_S); });
  EXPECT_NE(e.find("blk.0.ffn_up.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("0.5"), std::string::npos) << e;
  EXPECT_NE(e.find("0.25"), std::string::npos) << e;
  EXPECT_FALSE(test::file_exists(dir.file("out.gguf")));
  EXPECT_FALSE(test::file_exists(dir.file("out.gguf.tmp")));

  // Per-block scales survive TQ2_0 -> TQ1_0 -> TQ2_0.
  requantize_model(dir.file("mixed.gguf"), dir.file("tq1.gguf"), DType::TQ1_0);
  requantize_model(dir.file("tq1.gguf"), dir.file("tq2.gguf"), DType::TQ2_0);
  auto f = GgufFile::open(dir.file("tq2.gguf"));
  const GgufTensor& t = f->tensor("blk.0.ffn_up.weight");
  const TernaryUnpacked u = unpack_ternary(t.type, t.data, n);
  EXPECT_EQ(u.trits, trits);
  EXPECT_EQ(u.block_scales, scales);

  // With the two scales equal, the zero block's d does not stop I2_S.
  const std::vector<float> same = {0.5f, 0.5f, 4.0f};
  pack_tq2_0(trits.data(), same.data(), n, packed.data());
  const std::vector<uint8_t> i2s =
      requantize_tensor(DType::TQ2_0, packed.data(), n, DType::I2_S, "t");
  const TernaryUnpacked v = unpack_ternary(DType::I2_S, i2s.data(), n);
  EXPECT_EQ(v.trits, trits);
  EXPECT_EQ(v.block_scales, std::vector<float>{0.5f});
}

TEST(Quantize, BadCodeNamesTheTensor) {
  TempDir dir;
  std::vector<int8_t> trits(size_t(kQK_K), 1);
  const float scale = 1.0f;
  std::vector<uint8_t> packed(66);
  pack_tq2_0(trits.data(), &scale, kQK_K, packed.data());
  packed[5] = 0xff;  // code 3 is unused
  {
    GgufWriter w;
    w.set_string("general.architecture", "test");
    w.add_tensor("blk.0.attn_q.weight", DType::TQ2_0, {kQK_K, 1}, packed.data());
    w.write(dir.file("bad.gguf"));
  }
  const std::string e =
      error_of([&] { requantize_model(dir.file("bad.gguf"), dir.file("out.gguf"), DType::TQ1_0); });
  EXPECT_NE(e.find("bad.gguf"), std::string::npos) << e;
  EXPECT_NE(e.find("blk.0.attn_q.weight"), std::string::npos) << e;
  EXPECT_FALSE(test::file_exists(dir.file("out.gguf")));
}

// An I2_S row of 384 weights (runs of 128) has no TQ layout (blocks of 256): such tensors stay
// I2_S, said in the result; the rest are re-packed and the model is the same.
TEST(Quantize, RowsTheTargetCannotHoldKeepTheirType) {
  TempDir dir;
  CreateOptions o = test::tiny_options(3, DType::I2_S);
  o.hp.n_embd = 384, o.hp.n_ff = 768, o.hp.rope_dim = 96;
  const std::string in = test::create_model(dir, "i2s.gguf", o);
  const RequantizeResult r = requantize_model(in, dir.file("tq2.gguf"), DType::TQ2_0);
  EXPECT_EQ(r.n_kept, 6 * 2);  // q, k, v, o, gate, up of 2 blocks: 384 inputs
  EXPECT_EQ(r.kept, "blk.0.attn_q.weight, 384 weights per row");
  EXPECT_EQ(r.n_converted, 2);  // ffn_down: 768 inputs
  auto g = GgufFile::open(dir.file("tq2.gguf"));
  EXPECT_EQ(g->tensor("blk.0.attn_q.weight").type, DType::I2_S);
  EXPECT_EQ(g->tensor("blk.1.ffn_down.weight").type, DType::TQ2_0);
  const std::vector<int32_t> ids = {256, 5, 9, 77};
  EXPECT_EQ(test::session_logits(*Model::load(dir.file("tq2.gguf")), ids),
            test::session_logits(*Model::load(in), ids));
}

TEST(Quantize, RefusesSamePathAndNonTernaryTarget) {
  TempDir dir;
  const std::string path = dir.file("m.gguf");
  create_random_model(test::tiny_options(42, DType::TQ2_0), path);
  const std::string before = test::read_file(path);
  std::string e = error_of([&] { requantize_model(path, path, DType::TQ1_0); });
  EXPECT_NE(e.find("m.gguf"), std::string::npos) << e;
  e = error_of([&] { requantize_model(path, dir.path() + "/./m.gguf", DType::TQ1_0); });
  EXPECT_FALSE(e.empty());
  e = error_of([&] { requantize_model(path, dir.file("o.gguf"), DType::F16); });
  EXPECT_FALSE(e.empty());
  EXPECT_EQ(test::read_file(path), before);
}

}  // namespace
}  // namespace trit::engine
