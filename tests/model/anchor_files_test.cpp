// Files shaped as llama.cpp's llama-quantize and bitnet.cpp's converters write them: other
// architecture names, no hidden_activation key, quantised embeddings as the tied head,
// per-tensor `.scale` tensors. Each is rewritten here from a model made by `create`, so the
// expected logits are those of the original file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <optional>

#include "core/error.h"
#include "core/quant.h"
#include "infer/session.h"
#include "io/gguf.h"
#include "model/model.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "tools/create.h"
#include "tools/requantize.h"

namespace trit::engine {
namespace {

struct Rewrite {
  std::string arch = "bitnet";
  bool drop_activation = false;
  std::optional<DType> embd_type;  // re-encode token_embd
  // Re-encode every ternary tensor as floats of this type, as llama.cpp's BitNet converter writes
  // them: each weight trit / (1 / s) in f32 (its absmean rounding, the scale inverted twice),
  // then cast; or, with linear_times_scale, trit * s (`trit convert --type f16`'s form).
  std::optional<DType> linear_float;
  bool linear_times_scale = false;
  // Extra tensors to add: name -> f32 values.
  std::vector<std::pair<std::string, std::vector<float>>> extra;
  // Values to multiply into a linear layer's block scales (to test `.scale` tensors).
  std::function<void(const std::string&, std::vector<uint8_t>&)> edit;
};

// Copies src to dst with the changes above, renaming the <arch>.* keys.
void rewrite(const std::string& src, const std::string& dst, const Rewrite& rw) {
  auto f = GgufFile::open(src);
  const std::string old_arch = f->get_string("general.architecture");
  GgufWriter w;
  for (const auto& [key, value] : f->metadata()) {
    std::string k = key;
    if (k.rfind(old_arch + ".", 0) == 0) k = rw.arch + k.substr(old_arch.size());
    if (rw.drop_activation && k == rw.arch + ".hidden_activation") continue;
    if (k == "general.alignment") continue;
    w.set(k, value);
  }
  w.set_string("general.architecture", rw.arch);
  std::vector<std::vector<uint8_t>> keep;
  for (const GgufTensor& t : f->tensors()) {
    std::vector<uint8_t> bytes(t.data, t.data + t.nbytes);
    DType type = t.type;
    if (t.name == "token_embd.weight" && rw.embd_type) {
      std::vector<float> x(size_t(t.n_elements()));
      dequantize(t.type, t.data, t.n_elements(), x.data());
      bytes = quantize(*rw.embd_type, x.data(), t.n_elements());
      type = *rw.embd_type;
    }
    if (rw.linear_float && dtype_traits(t.type).ternary) {
      const TernaryUnpacked u = unpack_ternary(t.type, t.data, t.n_elements());
      std::vector<float> x(size_t(t.n_elements()));
      for (size_t i = 0; i < x.size(); ++i) {
        const float s = u.block_scales[u.block_scales.size() == 1 ? 0 : i / 256];
        const float inv = 1.0f / s;
        x[i] = rw.linear_times_scale ? float(u.trits[i]) * s : float(u.trits[i]) / inv;
      }
      bytes = quantize(*rw.linear_float, x.data(), t.n_elements());
      type = *rw.linear_float;
    }
    if (rw.edit) rw.edit(t.name, bytes);
    keep.push_back(std::move(bytes));
    w.add_tensor(t.name, type, t.ne, keep.back().data());
  }
  for (const auto& [name, values] : rw.extra) {
    keep.emplace_back(reinterpret_cast<const uint8_t*>(values.data()),
                      reinterpret_cast<const uint8_t*>(values.data() + values.size()));
    w.add_tensor(name, DType::F32, {int64_t(values.size())}, keep.back().data());
  }
  w.write(dst);
}

std::vector<float> logits_of(const std::string& path,
                             std::vector<std::string>* warnings = nullptr) {
  auto m = Model::load(path, [&](const std::string& s) {
    if (warnings) warnings->push_back(s);
  });
  return test::session_logits(*m, {256, 10, 20, 30, 40, 50}, {.n_ctx = 16});
}

class AnchorFiles : public ::testing::Test {
 protected:
  std::string make(DType type) {
    CreateOptions o = test::tiny_options(5);
    o.type = type;
    return test::create_model(dir_, cat("base_", dtype_name(type), ".gguf"), o);
  }
  test::TempDir dir_;
};

TEST_F(AnchorFiles, LlamaQuantizeStyleTq1WithQ6KTiedHeadAndNoActivationKey) {
  const std::string base = make(DType::TQ1_0);
  const std::string out = dir_.file("llama_cpp.gguf");
  Rewrite rw;
  rw.drop_activation = true;
  rw.embd_type = DType::Q6_K;
  rewrite(base, out, rw);
  std::vector<std::string> warnings;
  const std::vector<float> got = logits_of(out, &warnings);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("activation relu2 (no bitnet.hidden_activation"), std::string::npos)
      << warnings[0];
  // Only the q6_K rounding of the embedding differs from the original file.
  EXPECT_LT(test::rel_l2(got, logits_of(base)), 0.1);
  auto m = Model::load(out);
  EXPECT_TRUE(m->hparams().tied_head);
  EXPECT_EQ(m->weights().output.type, DType::Q6_K);
}

TEST_F(AnchorFiles, BitnetCppStyleI2SWithItsArchitectureName) {
  const std::string base = make(DType::I2_S);
  const std::string out = dir_.file("bitnet_cpp.gguf");
  Rewrite rw;
  rw.arch = "bitnet-b1.58";
  rw.drop_activation = true;
  rewrite(base, out, rw);
  EXPECT_EQ(logits_of(out), logits_of(base));
  auto m = Model::load(out);
  EXPECT_EQ(m->hparams().arch, "bitnet-b1.58");
  EXPECT_EQ(m->weights().blocks[0].q.m.type, DType::I2_S);
}

// llama.cpp's converter writes BitNet linear weights as F16 (or F32) floats already rounded to
// three values per tensor, {-s, 0, +s}; llama-quantize packs them as TQ1_0/TQ2_0 with d = s.
// Files that hold the same numbers give the same logits: the float file's layers keep their s
// (absmean of them would be s times the fraction of non-zeros, another model).
TEST_F(AnchorFiles, LlamaConvertStyleTernaryFloatsGiveThePackedModelsLogits) {
  const std::string tq2 = make(DType::TQ2_0);
  const std::vector<float> want = logits_of(tq2);
  for (const DType packed : {DType::TQ1_0, DType::I2_S}) {
    const std::string path = dir_.file(cat("packed_", dtype_name(packed), ".gguf"));
    requantize_model(tq2, path, packed);
    EXPECT_EQ(logits_of(path), want) << dtype_name(packed);
  }
  for (const auto& [type, times_scale] :
       {std::pair{DType::F16, false}, {DType::F32, false}, {DType::F32, true}}) {
    const std::string what = cat(dtype_name(type), times_scale ? ", trit * s" : ", trit / (1 / s)");
    const std::string out =
        dir_.file(cat("floats_", dtype_name(type), times_scale ? "_times_s" : "", ".gguf"));
    Rewrite rw;
    rw.linear_float = type;
    rw.linear_times_scale = times_scale;
    rewrite(tq2, out, rw);
    ASSERT_EQ(GgufFile::open(out)->find_tensor("blk.0.attn_q.weight")->type, type) << what;
    const std::vector<float> got = logits_of(out);
    if (type == DType::F32 && !times_scale) {
      // 1 / (1 / s) is s or one f32 step from it: the same model but for that step.
      EXPECT_LT(test::rel_l2(got, want), 1e-6) << what;
    } else {
      EXPECT_EQ(got, want) << what;
    }
  }
}

TEST_F(AnchorFiles, PerTensorScaleMultipliesTheLayerOutput) {
  // Halve the fp16 block scales of blk.0.ffn_up and add blk.0.ffn_up.scale = 2: same model.
  const std::string base = make(DType::TQ2_0);
  const std::string out = dir_.file("scaled.gguf");
  Rewrite rw;
  rw.edit = [](const std::string& name, std::vector<uint8_t>& bytes) {
    if (name != "blk.0.ffn_up.weight") return;
    for (size_t b = 0; b + 66 <= bytes.size(); b += 66) {
      uint16_t d;
      std::memcpy(&d, &bytes[b + 64], 2);
      d = uint16_t(d - (1 << 10));  // exponent - 1: exactly half
      std::memcpy(&bytes[b + 64], &d, 2);
    }
  };
  rw.extra = {{"blk.0.ffn_up.scale", {2.0f}}};
  rewrite(base, out, rw);
  const std::vector<float> a = logits_of(out), b = logits_of(base);
  EXPECT_LT(test::rel_l2(a, b), 1e-6);
}

TEST_F(AnchorFiles, WrongShapeAndUnsupportedTypeAreNamed) {
  const std::string base = make(DType::TQ2_0);
  const std::string out = dir_.file("bad.gguf");
  Rewrite rw;
  rw.extra = {{"blk.0.attn_q.scale", {1.0f, 2.0f}}};
  rewrite(base, out, rw);
  try {
    Model::load(out);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.scale"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trit::engine
