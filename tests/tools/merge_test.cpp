// trit merge: adapters folded into float linear layers, or stored in the model file; the
// loader's float path; errors that name the file and leave no output.
#include "tools/merge.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "model/model.h"
#include "support/adapters.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "tools/create.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::random_adapter;
using test::TempDir;

using Adapters = std::vector<std::pair<const LoraAdapter*, float>>;

const std::vector<int32_t> kIds = {256, 3, 77, 140, 9, 300, 41, 12};

std::string make_model(const TempDir& dir, const std::string& name, DType type = DType::TQ2_0) {
  CreateOptions o = test::tiny_options(5);
  o.type = type;
  return test::create_model(dir, name, o);
}

// A copy of a model with a per-tensor `.scale` (as llama.cpp's bitnet files carry) on some layers.
std::string with_scales(const TempDir& dir, const std::string& in_path) {
  auto in = GgufFile::open(in_path);
  GgufWriter w;
  for (const auto& [k, v] : in->metadata()) w.set(k, v);
  for (const GgufTensor& t : in->tensors()) w.add_tensor(t.name, t.type, t.ne, t.data);
  static const float s0 = 1.5f, s1 = 0.625f;
  w.add_tensor("blk.0.attn_q.scale", DType::F32, {1}, &s0);
  w.add_tensor("blk.1.ffn_down.scale", DType::F32, {1}, &s1);
  const std::string out = dir.file("scaled.gguf");
  w.write(out);
  return out;
}

// The logits of kIds with the adapters attached as --lora attaches them (none: the model's
// embedded adapter applies, if it has one).
std::vector<float> logits_of(const Model& m, const Adapters& lora, bool act_quant) {
  return test::session_logits(m, kIds,
                              {.act_quant = act_quant, .lora = lora, .n_ctx = 16, .n_batch = 3});
}

MergeOptions float_opts(DType type) {
  MergeOptions o;
  o.mode = MergeMode::Float;
  o.type = type;
  o.threads = 2;
  return o;
}

MergeOptions attach_opts() {
  MergeOptions o;
  o.mode = MergeMode::Attach;
  o.threads = 2;
  return o;
}

TEST(Merge, AttachComputesWhatLoraDoesBitForBit) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const LoraAdapter ad =
      random_adapter(base->hparams(), {.targets = "all,head", .rank = 4, .alpha = 8.0f, .seed = 1});
  save_adapter_gguf(ad, dir.file("a.gguf"));
  const std::string spec = dir.file("a.gguf") + ":0.7";
  const MergeResult r =
      merge_adapter_files(base_path, {spec}, dir.file("attach.gguf"), attach_opts());
  EXPECT_EQ(r.n_adapters, 1);
  EXPECT_EQ(r.n_adapter_layers, int64_t(ad.layers.size()));

  auto attached = Model::load(dir.file("attach.gguf"));
  ASSERT_NE(attached->embedded_adapter(), nullptr);
  EXPECT_EQ(attached->embedded_adapter_scale(), 0.7f);
  EXPECT_EQ(attached->embedded_adapter()->alpha, 8.0f);
  const LoraAdapter loaded = load_adapter_gguf(dir.file("a.gguf"));
  const Adapters set = {{&loaded, 0.7f}};
  for (bool act_quant : {true, false}) {
    SCOPED_TRACE(act_quant);
    // A null set applies the embedded adapter; the same computation as --lora.
    const std::vector<float> want = logits_of(*base, set, act_quant);
    EXPECT_EQ(logits_of(*attached, {}, act_quant), want);
    // Given explicitly with its scale, as --lora would give it: the same computation.
    EXPECT_EQ(
        logits_of(*attached, {{attached->embedded_adapter(), attached->embedded_adapter_scale()}},
                  act_quant),
        want);
    EXPECT_GT(test::rel_l2(logits_of(*base, {}, act_quant), want), 1e-3);  // not vacuous
  }
  // The base tensors keep their bytes.
  auto a = GgufFile::open(base_path);
  auto b = GgufFile::open(dir.file("attach.gguf"));
  for (const GgufTensor& t : a->tensors()) {
    const GgufTensor& u = b->tensor(t.name);
    ASSERT_EQ(u.type, t.type) << t.name;
    ASSERT_EQ(u.nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(u.data, t.data, t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(b->tensors().size(), a->tensors().size() + 2 * ad.layers.size());
  EXPECT_EQ(b->get_f32("trit.adapter.scale"), 0.7f);
  EXPECT_FALSE(b->get_bool_or("trit.adapter.rslora", true));
  EXPECT_EQ(b->get_array("trit.merged_adapters", GgufType::STRING).strings,
            std::vector<std::string>{spec});
}

TEST(Merge, AttachFoldsSeveralAdaptersByConcatenatingRanks) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  // Different ranks, layers and scalings: layers with one adapter and with both.
  const LoraAdapter a1 =
      random_adapter(hp, {.targets = "attn_q,attn_v,ffn_up", .rank = 4, .alpha = 8.0f, .seed = 1});
  const LoraAdapter a2 = random_adapter(
      hp, {.targets = "attn_q,ffn_down,head", .rank = 2, .alpha = 4.0f, .rslora = true, .seed = 2});
  const std::vector<MergeSource> src = {{"a1", &a1, 1.0f}, {"a2", &a2, 0.5f}};
  merge_model(base_path, src, dir.file("attach.gguf"), attach_opts());
  auto attached = Model::load(dir.file("attach.gguf"));
  ASSERT_NE(attached->embedded_adapter(), nullptr);
  EXPECT_EQ(attached->embedded_adapter()->layers.at("blk.0.attn_q.weight").rank, 6);
  EXPECT_EQ(attached->embedded_adapter()->layers.at("blk.0.attn_v.weight").rank, 4);
  const Adapters set = {{&a1, 1.0f}, {&a2, 0.5f}};
  // The folded set sums the same products in another order. Compared with float activations:
  // with int8 ones, a last-bit difference can move an activation across a rounding boundary of
  // the quantiser and the logits then differ by more than rounding (on both sides alike).
  const double err = test::rel_l2(logits_of(*attached, {}, false), logits_of(*base, set, false));
  EXPECT_LT(err, 1e-5);
}

TEST(Merge, FloatF32MatchesTheAdapterPathWithinRounding) {
  TempDir dir;
  const std::string base_path = with_scales(dir, make_model(dir, "m.gguf"));
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  EXPECT_EQ(base->weights().blocks[0].q.out_scale, 1.5f);
  const LoraAdapter ad =
      random_adapter(hp, {.targets = "all,head", .rank = 4, .alpha = 8.0f, .seed = 3});
  const MergeResult r =
      merge_model(base_path, {{"a.gguf", &ad, 0.8f}}, dir.file("f32.gguf"), float_opts(DType::F32));
  EXPECT_EQ(r.n_merged, 7 * hp.n_layer + 1);  // every block linear and the (tied) head

  auto merged = Model::load(dir.file("f32.gguf"));
  EXPECT_FALSE(merged->hparams().tied_head);  // the merged head is its own tensor now
  EXPECT_TRUE(merged->weights().blocks[0].q.is_float());
  EXPECT_EQ(merged->weights().blocks[0].q.out_scale, 1.0f);  // folded into the weights
  EXPECT_EQ(merged->embedded_adapter(), nullptr);
  const Adapters set = {{&ad, 0.8f}};
  // The merged layers compute y = W' x with the un-quantised x, and the adapter path's LoRA
  // branch also sees the un-quantised x: with float activations (--act-quant none) both compute
  // the same sums, in another order. With int8 activations the adapter path quantises x for the
  // ternary part, which a float layer does not, so they differ by more than rounding.
  const std::vector<float> want = logits_of(*base, set, false);
  const std::vector<float> got = logits_of(*merged, {}, false);
  EXPECT_LT(test::rel_l2(got, want), 2e-6);
  EXPECT_GT(test::rel_l2(logits_of(*base, {}, false), want), 1e-3);  // not vacuous
  // Every linear layer is float: --act-quant does not change anything.
  EXPECT_EQ(logits_of(*merged, {}, true), got);

  auto g = GgufFile::open(dir.file("f32.gguf"));
  EXPECT_EQ(g->get_string("trit.linear_weights"), "merged");
  EXPECT_EQ(g->get_u32("general.file_type"), 0u);
  EXPECT_EQ(g->tensor("blk.1.ffn_up.weight").type, DType::F32);
  EXPECT_EQ(g->find_tensor("blk.0.attn_q.scale"), nullptr);
  EXPECT_EQ(g->get_array("trit.merged_adapters", GgufType::STRING).strings,
            std::vector<std::string>{"a.gguf:0.8"});
  EXPECT_FALSE(test::file_exists(dir.file("f32.gguf.tmp")));
}

// A llama file keeps W_q and W_k in llama.cpp's row order (model/llama_layout.h), adapters in
// Hugging Face's: merging adds each adapter row to the file row that holds it.
TEST(Merge, LlamaFileRowsGetTheirAdapterRows) {
  TempDir dir;
  CreateOptions o = test::tiny_options(9);
  o.hp.arch = "llama";
  o.hp.act = Activation::Silu;
  const std::string base_path = test::create_model(dir, "llama.gguf", o);
  auto base = Model::load(base_path);
  const LoraAdapter ad =
      random_adapter(base->hparams(), {.targets = "q,k,v,o", .rank = 4, .alpha = 8.0f, .seed = 5});
  const Adapters set = {{&ad, 1.0f}};
  merge_model(base_path, {{"a.gguf", &ad, 1.0f}}, dir.file("f32.gguf"), float_opts(DType::F32));
  auto merged = Model::load(dir.file("f32.gguf"));
  EXPECT_EQ(merged->hparams().arch, "llama");
  const std::vector<float> want = logits_of(*base, set, false);
  EXPECT_LT(test::rel_l2(logits_of(*merged, {}, false), want), 2e-6);
  EXPECT_GT(test::rel_l2(logits_of(*base, {}, false), want), 1e-3);  // not vacuous
  merge_model(base_path, {{"a.gguf", &ad, 1.0f}}, dir.file("attach.gguf"), attach_opts());
  EXPECT_EQ(logits_of(*Model::load(dir.file("attach.gguf")), {}, true),
            logits_of(*base, set, true));
}

// Layers of 864 inputs (no packed type holds them; the loader pads them): a float merge
// cannot keep them ternary in a file, so it says so and attach is the way.
TEST(Merge, OddWidthsMergeByAttachingOnly) {
  TempDir dir;
  CreateOptions o = test::tiny_options(4);
  o.hp.n_ff = 864;
  const std::string base_path = test::create_model(dir, "odd.gguf", o);
  auto base = Model::load(base_path);
  const LoraAdapter ad =
      random_adapter(base->hparams(), {.targets = "q,v", .rank = 4, .alpha = 8.0f, .seed = 2});
  const std::string msg = test::error_of([&] {
    merge_model(base_path, {{"a.gguf", &ad, 1.0f}}, dir.file("f.gguf"), float_opts(DType::F16));
  });
  EXPECT_NE(msg.find("blk.0.ffn_down.weight: 864 inputs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--mode attach"), std::string::npos) << msg;
  EXPECT_FALSE(test::file_exists(dir.file("f.gguf")));
  merge_model(base_path, {{"a.gguf", &ad, 1.0f}}, dir.file("attach.gguf"), attach_opts());
  EXPECT_EQ(logits_of(*Model::load(dir.file("attach.gguf")), {}, true),
            logits_of(*base, {{&ad, 1.0f}}, true));
}

TEST(Merge, FloatF16IsWithinF16Rounding) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf", DType::I2_S);
  auto base = Model::load(base_path);
  const LoraAdapter ad =
      random_adapter(base->hparams(), {.targets = "all", .rank = 8, .alpha = 16.0f, .seed = 4});
  save_adapter_gguf(ad, dir.file("a.gguf"));
  merge_adapter_files(base_path, {dir.file("a.gguf")}, dir.file("f16.gguf"),
                      float_opts(DType::F16));
  auto merged = Model::load(dir.file("f16.gguf"));
  EXPECT_EQ(merged->weights().blocks[1].down.f.type, DType::F16);
  EXPECT_EQ(GgufFile::open(dir.file("f16.gguf"))->get_u32("general.file_type"), 1u);
  const Adapters set = {{&ad, 1.0f}};
  const double err = test::rel_l2(logits_of(*merged, {}, false), logits_of(*base, set, false));
  // Each weight rounds to f16 (relative 2^-11); errors of independent weights partly cancel.
  EXPECT_LT(err, 2e-3);
  EXPECT_GT(err, 0.0);
}

TEST(Merge, FloatLeavesUntouchedLayersTernary) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  const LoraAdapter ad =
      random_adapter(hp, {.targets = "attn_q,attn_v", .rank = 4, .alpha = 8.0f, .seed = 5});
  merge_model(base_path, {{"a", &ad, 1.0f}}, dir.file("out.gguf"), float_opts(DType::F32));
  auto merged = Model::load(dir.file("out.gguf"));
  EXPECT_TRUE(merged->weights().blocks[0].v.is_float());
  EXPECT_FALSE(merged->weights().blocks[0].k.is_float());
  auto a = GgufFile::open(base_path);
  auto b = GgufFile::open(dir.file("out.gguf"));
  const GgufTensor& k0 = a->tensor("blk.0.attn_k.weight");
  const GgufTensor& k1 = b->tensor("blk.0.attn_k.weight");
  ASSERT_EQ(k1.type, DType::TQ2_0);
  EXPECT_EQ(std::memcmp(k0.data, k1.data, k0.nbytes), 0);
  EXPECT_EQ(b->get_u32("general.file_type"), a->get_u32("general.file_type"));
  EXPECT_EQ(b->find_tensor("output.weight"), nullptr);  // no head adapter: still tied
  const Adapters set = {{&ad, 1.0f}};
  EXPECT_LT(test::rel_l2(logits_of(*merged, {}, false), logits_of(*base, set, false)), 2e-6);
}

TEST(Merge, FloatMasterWeightsAreTernarisedAsTheLoaderDoes) {
  // Float linear weights without trit.linear_weights are master weights (trit convert --type
  // f16 writes T * scale): the loader ternarises them. Merging must keep that meaning for the
  // layers it does not touch, since the merged file marks its float layers as used as they are.
  TempDir dir;
  const std::string tern = make_model(dir, "m.gguf");
  auto in = GgufFile::open(tern);
  GgufWriter w;
  for (const auto& [k, v] : in->metadata()) w.set(k, v);
  std::vector<std::vector<uint8_t>> keep;
  for (const GgufTensor& t : in->tensors()) {
    if (t.type == DType::TQ2_0) {
      std::vector<float> v(static_cast<size_t>(t.n_elements()));
      dequantize(t.type, t.data, t.n_elements(), v.data());
      for (float& x : v) x *= 0.9f + 0.2f * float(&x - v.data()) / float(v.size());  // not ternary
      keep.push_back(quantize(DType::F16, v.data(), t.n_elements()));
      w.add_tensor(t.name, DType::F16, t.ne, keep.back().data());
    } else {
      w.add_tensor(t.name, t.type, t.ne, t.data);
    }
  }
  w.write(dir.file("master.gguf"));
  auto master = Model::load(dir.file("master.gguf"));
  EXPECT_FALSE(master->weights().blocks[0].q.is_float());  // ternarised at load, as before
  const LoraAdapter ad = random_adapter(
      master->hparams(), {.targets = "ffn_gate", .rank = 4, .alpha = 8.0f, .seed = 6});
  const MergeResult r = merge_model(dir.file("master.gguf"), {{"a", &ad, 1.0f}},
                                    dir.file("out.gguf"), float_opts(DType::F32));
  EXPECT_EQ(r.n_merged, master->hparams().n_layer);
  EXPECT_EQ(r.n_ternarised, 6 * master->hparams().n_layer);
  auto merged = Model::load(dir.file("out.gguf"));
  EXPECT_TRUE(merged->weights().blocks[0].gate.is_float());
  EXPECT_EQ(GgufFile::open(dir.file("out.gguf"))->tensor("blk.0.attn_q.weight").type, DType::TQ2_0);
  const Adapters set = {{&ad, 1.0f}};
  EXPECT_LT(test::rel_l2(logits_of(*merged, {}, false), logits_of(*master, set, false)), 2e-6);
}

TEST(Merge, AnAttachedAdapterCountsWhenMergingAgain) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  const LoraAdapter a1 =
      random_adapter(hp, {.targets = "all", .rank = 4, .alpha = 8.0f, .seed = 7});
  const LoraAdapter a2 =
      random_adapter(hp, {.targets = "attn_output", .rank = 2, .alpha = 2.0f, .seed = 8});
  merge_model(base_path, {{"a1", &a1, 1.0f}}, dir.file("attach.gguf"), attach_opts());
  merge_model(dir.file("attach.gguf"), {{"a2", &a2, 2.0f}}, dir.file("float.gguf"),
              float_opts(DType::F32));
  auto merged = Model::load(dir.file("float.gguf"));
  EXPECT_EQ(merged->embedded_adapter(), nullptr);
  const Adapters set = {{&a1, 1.0f}, {&a2, 2.0f}};
  EXPECT_LT(test::rel_l2(logits_of(*merged, {}, false), logits_of(*base, set, false)), 2e-6);
  EXPECT_EQ(GgufFile::open(dir.file("float.gguf"))
                ->get_array("trit.merged_adapters", GgufType::STRING)
                .strings,
            (std::vector<std::string>{"a1", "a2:2"}));
}

TEST(Merge, BadLinearWeightsKeyIsRefused) {
  TempDir dir;
  auto in = GgufFile::open(make_model(dir, "m.gguf"));
  GgufWriter w;
  for (const auto& [k, v] : in->metadata()) w.set(k, v);
  w.set_string("trit.linear_weights", "mystery");
  for (const GgufTensor& t : in->tensors()) w.add_tensor(t.name, t.type, t.ne, t.data);
  w.write(dir.file("bad.gguf"));
  const std::string msg = error_of([&] { Model::load(dir.file("bad.gguf")); });
  EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trit.linear_weights"), std::string::npos) << msg;
}

TEST(Merge, ErrorsNameTheFileAndLeaveNoOutput) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  HParams other = *hparams_preset("tiny");
  other.n_ff = 512;
  save_adapter_gguf(
      random_adapter(other, {.targets = "ffn_up", .rank = 2, .alpha = 4.0f, .seed = 9}),
      dir.file("other.gguf"));
  for (MergeMode mode : {MergeMode::Float, MergeMode::Attach}) {
    MergeOptions o;
    o.mode = mode;
    std::string msg = error_of(
        [&] { merge_adapter_files(base_path, {dir.file("other.gguf")}, dir.file("out.gguf"), o); });
    EXPECT_NE(msg.find("other.gguf"), std::string::npos) << msg;
    EXPECT_NE(msg.find("blk.0.ffn_up.weight"), std::string::npos) << msg;
    msg = error_of([&] {
      merge_adapter_files(base_path, {dir.file("missing.gguf")}, dir.file("out.gguf"), o);
    });
    EXPECT_NE(msg.find("missing.gguf"), std::string::npos) << msg;
    msg = error_of([&] { merge_adapter_files(base_path, {}, dir.file("out.gguf"), o); });
    EXPECT_FALSE(msg.empty());
    msg = error_of([&] {
      merge_adapter_files(dir.file("nomodel.gguf"), {dir.file("other.gguf")}, dir.file("out.gguf"),
                          o);
    });
    EXPECT_NE(msg.find("nomodel.gguf"), std::string::npos) << msg;
    EXPECT_FALSE(test::file_exists(dir.file("out.gguf")));
    EXPECT_FALSE(test::file_exists(dir.file("out.gguf.tmp")));
  }
  // A merged weight beyond f16 fails mid-stream: the temporary file goes too.
  auto base = Model::load(base_path);
  LoraAdapter huge = random_adapter(base->hparams(),
                                    {.targets = "ffn_down", .rank = 1, .alpha = 1.0f, .seed = 10});
  for (auto& [name, l] : huge.layers) {
    for (float& v : l.b) v = 1e3f;
    for (float& v : l.a) v = 1e3f;
  }
  const std::string msg = error_of([&] {
    merge_model(base_path, {{"huge", &huge, 1.0f}}, dir.file("out.gguf"), float_opts(DType::F16));
  });
  EXPECT_NE(msg.find("blk.0.ffn_down.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32"), std::string::npos) << msg;
  EXPECT_FALSE(test::file_exists(dir.file("out.gguf")));
  EXPECT_FALSE(test::file_exists(dir.file("out.gguf.tmp")));
  EXPECT_NE(error_of([&] {
              merge_model(base_path, {{"a", &huge, 1.0f}}, base_path, attach_opts());
            }).find("different file"),
            std::string::npos);
}

TEST(Merge, EmbeddedAdapterMissingItsKeysIsAnError) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto in = GgufFile::open(base_path);
  GgufWriter w;
  for (const auto& [k, v] : in->metadata()) w.set(k, v);
  for (const GgufTensor& t : in->tensors()) w.add_tensor(t.name, t.type, t.ne, t.data);
  const std::vector<float> a(256, 0.0f);
  w.add_tensor("blk.0.attn_q.weight.lora_a", DType::F32, {256, 1}, a.data());
  w.add_tensor("blk.0.attn_q.weight.lora_b", DType::F32, {1, 256}, a.data());
  w.write(dir.file("bad.gguf"));
  const std::string msg = error_of([&] { Model::load(dir.file("bad.gguf")); });
  EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trit.adapter.alpha"), std::string::npos) << msg;
}

}  // namespace
}  // namespace trit::engine
