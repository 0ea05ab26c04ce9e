// trit merge: adapters folded into float linear layers, or stored in the model file; the
// loader's float path; errors that name the file and leave no output.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "infer/session.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "tools/create.h"
#include "model/lora_set.h"
#include "tools/merge.h"
#include "model/model.h"
#include "test_util.h"

namespace trit::engine {
namespace {

using test::TempDir;

const std::vector<int32_t> kIds = {256, 3, 77, 140, 9, 300, 41, 12};

// An adapter with random A and B (B non-zero, unlike a fresh one) on the given linear layers of
// every block, plus the head when asked.
LoraAdapter random_adapter(const HParams& hp, const std::vector<std::string>& whats, int64_t rank,
                           float alpha, bool rslora, bool head, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  LoraAdapter ad;
  ad.alpha = alpha;
  ad.rslora = rslora;
  auto add = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    LoraLayer L;
    L.n_in = n_in;
    L.n_out = n_out;
    L.rank = rank;
    L.a.resize(size_t(rank * n_in));
    L.b.resize(size_t(n_out * rank));
    for (float& v : L.a) v = nd(rng);
    for (float& v : L.b) v = nd(rng);
    ad.layers[name] = std::move(L);
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (const std::string& what : whats) {
      auto [n_in, n_out] = block_linear_shape(hp, what);
      add(block_tensor_name(l, what), n_in, n_out);
    }
  }
  if (head) add("output.weight", hp.n_embd, hp.n_vocab);
  return ad;
}

std::string make_model(const TempDir& dir, const std::string& name, DType type = DType::TQ2_0) {
  CreateOptions o;
  o.hp = *hparams_preset("tiny");
  o.type = type;
  o.seed = 5;
  create_random_model(o, dir.file(name));
  return dir.file(name);
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

std::vector<float> logits_of(const Model& m, const LoraSet* set, bool act_quant) {
  ThreadPool pool(2);
  Session s(m, 16, pool, ForwardOptions{act_quant, set}, 3);
  std::vector<float> out;
  s.eval(kIds, out, true);
  return out;
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
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

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const std::vector<std::string>& all_linears() {
  return block_linear_names();
}

TEST(Merge, AttachComputesWhatLoraDoesBitForBit) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const LoraAdapter ad = random_adapter(base->hparams(), all_linears(), 4, 8.0f, false, true, 1);
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
  const LoraSet set = resolve_lora({{&loaded, 0.7f}}, base->hparams());
  for (bool act_quant : {true, false}) {
    SCOPED_TRACE(act_quant);
    // A null set applies the embedded adapter; the same computation as --lora.
    const std::vector<float> want = logits_of(*base, &set, act_quant);
    EXPECT_EQ(logits_of(*attached, nullptr, act_quant), want);
    EXPECT_EQ(logits_of(*attached, attached->embedded_lora(), act_quant), want);
    EXPECT_GT(rel_error(logits_of(*base, nullptr, act_quant), want), 1e-3);  // not vacuous
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
      random_adapter(hp, {"attn_q", "attn_v", "ffn_up"}, 4, 8.0f, false, false, 1);
  const LoraAdapter a2 = random_adapter(hp, {"attn_q", "ffn_down"}, 2, 4.0f, true, true, 2);
  const std::vector<MergeSource> src = {{"a1", &a1, 1.0f}, {"a2", &a2, 0.5f}};
  merge_model(base_path, src, dir.file("attach.gguf"), attach_opts());
  auto attached = Model::load(dir.file("attach.gguf"));
  ASSERT_NE(attached->embedded_adapter(), nullptr);
  EXPECT_EQ(attached->embedded_adapter()->layers.at("blk.0.attn_q.weight").rank, 6);
  EXPECT_EQ(attached->embedded_adapter()->layers.at("blk.0.attn_v.weight").rank, 4);
  const LoraSet set = resolve_lora({{&a1, 1.0f}, {&a2, 0.5f}}, hp);
  // The folded set sums the same products in another order. Compared with float activations:
  // with int8 ones, a last-bit difference can move an activation across a rounding boundary of
  // the quantiser and the logits then differ by more than rounding (on both sides alike).
  const double err = rel_error(logits_of(*attached, nullptr, false), logits_of(*base, &set, false));
  EXPECT_LT(err, 1e-5);
}

TEST(Merge, FloatF32MatchesTheAdapterPathWithinRounding) {
  TempDir dir;
  const std::string base_path = with_scales(dir, make_model(dir, "m.gguf"));
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  EXPECT_EQ(base->weights().blocks[0].q.out_scale, 1.5f);
  const LoraAdapter ad = random_adapter(hp, all_linears(), 4, 8.0f, false, true, 3);
  const MergeResult r =
      merge_model(base_path, {{"a.gguf", &ad, 0.8f}}, dir.file("f32.gguf"), float_opts(DType::F32));
  EXPECT_EQ(r.n_merged, 7 * hp.n_layer + 1);  // every block linear and the (tied) head

  auto merged = Model::load(dir.file("f32.gguf"));
  EXPECT_FALSE(merged->hparams().tied_head);  // the merged head is its own tensor now
  EXPECT_TRUE(merged->weights().blocks[0].q.is_float());
  EXPECT_EQ(merged->weights().blocks[0].q.out_scale, 1.0f);  // folded into the weights
  EXPECT_EQ(merged->embedded_adapter(), nullptr);
  const LoraSet set = resolve_lora({{&ad, 0.8f}}, hp);
  // The merged layers compute y = W' x with the un-quantised x, and the adapter path's LoRA
  // branch also sees the un-quantised x: with float activations (--act-quant none) both compute
  // the same sums, in another order. With int8 activations the adapter path quantises x for the
  // ternary part, which a float layer does not, so they differ by more than rounding.
  const std::vector<float> want = logits_of(*base, &set, false);
  const std::vector<float> got = logits_of(*merged, nullptr, false);
  EXPECT_LT(rel_error(got, want), 2e-6);
  EXPECT_GT(rel_error(logits_of(*base, nullptr, false), want), 1e-3);  // not vacuous
  // Every linear layer is float: --act-quant does not change anything.
  EXPECT_EQ(logits_of(*merged, nullptr, true), got);

  auto g = GgufFile::open(dir.file("f32.gguf"));
  EXPECT_EQ(g->get_string("trit.linear_weights"), "merged");
  EXPECT_EQ(g->get_u32("general.file_type"), 0u);
  EXPECT_EQ(g->tensor("blk.1.ffn_up.weight").type, DType::F32);
  EXPECT_EQ(g->find_tensor("blk.0.attn_q.scale"), nullptr);
  EXPECT_EQ(g->get_array("trit.merged_adapters", GgufType::STRING).strings,
            std::vector<std::string>{"a.gguf:0.8"});
  EXPECT_FALSE(test::file_exists(dir.file("f32.gguf.tmp")));
}

TEST(Merge, FloatF16IsWithinF16Rounding) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf", DType::I2_S);
  auto base = Model::load(base_path);
  const LoraAdapter ad = random_adapter(base->hparams(), all_linears(), 8, 16.0f, false, false, 4);
  save_adapter_gguf(ad, dir.file("a.gguf"));
  merge_adapter_files(base_path, {dir.file("a.gguf")}, dir.file("f16.gguf"),
                      float_opts(DType::F16));
  auto merged = Model::load(dir.file("f16.gguf"));
  EXPECT_EQ(merged->weights().blocks[1].down.f.type, DType::F16);
  EXPECT_EQ(GgufFile::open(dir.file("f16.gguf"))->get_u32("general.file_type"), 1u);
  const LoraSet set = resolve_lora({{&ad, 1.0f}}, base->hparams());
  const double err = rel_error(logits_of(*merged, nullptr, false), logits_of(*base, &set, false));
  // Each weight rounds to f16 (relative 2^-11); errors of independent weights partly cancel.
  EXPECT_LT(err, 2e-3);
  EXPECT_GT(err, 0.0);
}

TEST(Merge, FloatLeavesUntouchedLayersTernary) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  const LoraAdapter ad = random_adapter(hp, {"attn_q", "attn_v"}, 4, 8.0f, false, false, 5);
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
  const LoraSet set = resolve_lora({{&ad, 1.0f}}, hp);
  EXPECT_LT(rel_error(logits_of(*merged, nullptr, false), logits_of(*base, &set, false)), 2e-6);
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
  const LoraAdapter ad = random_adapter(master->hparams(), {"ffn_gate"}, 4, 8.0f, false, false, 6);
  const MergeResult r = merge_model(dir.file("master.gguf"), {{"a", &ad, 1.0f}},
                                    dir.file("out.gguf"), float_opts(DType::F32));
  EXPECT_EQ(r.n_merged, master->hparams().n_layer);
  EXPECT_EQ(r.n_ternarised, 6 * master->hparams().n_layer);
  auto merged = Model::load(dir.file("out.gguf"));
  EXPECT_TRUE(merged->weights().blocks[0].gate.is_float());
  EXPECT_EQ(GgufFile::open(dir.file("out.gguf"))->tensor("blk.0.attn_q.weight").type, DType::TQ2_0);
  const LoraSet set = resolve_lora({{&ad, 1.0f}}, master->hparams());
  EXPECT_LT(rel_error(logits_of(*merged, nullptr, false), logits_of(*master, &set, false)), 2e-6);
}

TEST(Merge, AnAttachedAdapterCountsWhenMergingAgain) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  const HParams& hp = base->hparams();
  const LoraAdapter a1 = random_adapter(hp, all_linears(), 4, 8.0f, false, false, 7);
  const LoraAdapter a2 = random_adapter(hp, {"attn_output"}, 2, 2.0f, false, false, 8);
  merge_model(base_path, {{"a1", &a1, 1.0f}}, dir.file("attach.gguf"), attach_opts());
  merge_model(dir.file("attach.gguf"), {{"a2", &a2, 2.0f}}, dir.file("float.gguf"),
              float_opts(DType::F32));
  auto merged = Model::load(dir.file("float.gguf"));
  EXPECT_EQ(merged->embedded_adapter(), nullptr);
  const LoraSet set = resolve_lora({{&a1, 1.0f}, {&a2, 2.0f}}, hp);
  EXPECT_LT(rel_error(logits_of(*merged, nullptr, false), logits_of(*base, &set, false)), 2e-6);
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
  save_adapter_gguf(random_adapter(other, {"ffn_up"}, 2, 4.0f, false, false, 9),
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
  LoraAdapter huge = random_adapter(base->hparams(), {"ffn_down"}, 1, 1.0f, false, false, 10);
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

// ---- the CLI ----

using test::run_trit;
using test::RunResult;

TEST(MergeCli, MergedModelsGiveTheLogitsOfLora) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  auto base = Model::load(base_path);
  save_adapter_gguf(random_adapter(base->hparams(), all_linears(), 4, 8.0f, false, true, 11),
                    dir.file("a.gguf"));
  const std::string lora = dir.file("a.gguf") + ":0.5";
  RunResult r = run_trit(dir, {"merge", "-m", base_path, "--lora", lora, "-o",
                               dir.file("attach.gguf"), "--mode", "attach", "-t", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("attach.gguf"), std::string::npos) << r.out;
  r = run_trit(dir, {"merge", "-m", base_path, "--lora", lora, "-o", dir.file("float.gguf"),
                     "--type", "f32", "-t", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;

  auto logits = [&](const std::vector<std::string>& extra, const std::string& out) {
    std::vector<std::string> args = {"logits", "--ids", "256,5,70,300", "-o", out, "-t", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult lr = run_trit(dir, args);
    EXPECT_EQ(lr.rc, 0) << lr.err;
    const std::string bytes = test::read_file(out);
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), v.size() * 4);
    return v;
  };
  for (const std::string act : {"int8", "none"}) {
    SCOPED_TRACE(act);
    const auto with_lora =
        logits({"-m", base_path, "--lora", lora, "--act-quant", act}, dir.file("l1.bin"));
    EXPECT_EQ(logits({"-m", dir.file("attach.gguf"), "--act-quant", act}, dir.file("l2.bin")),
              with_lora);
    if (act == "none") {
      EXPECT_LT(rel_error(logits({"-m", dir.file("float.gguf")}, dir.file("l3.bin")), with_lora),
                2e-6);
    }
  }
  // An attached model takes further adapters on top.
  const auto twice = logits({"-m", base_path, "--lora", lora, "--lora", lora}, dir.file("l4.bin"));
  EXPECT_EQ(logits({"-m", dir.file("attach.gguf"), "--lora", lora}, dir.file("l5.bin")), twice);
}

TEST(MergeCli, ErrorsAreOneLineNamingTheFile) {
  TempDir dir;
  const std::string base_path = make_model(dir, "m.gguf");
  const RunResult r = run_trit(
      dir, {"merge", "-m", base_path, "--lora", dir.file("nope.gguf"), "-o", dir.file("o.gguf")});
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err.rfind("trit: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  EXPECT_NE(r.err.find("nope.gguf"), std::string::npos) << r.err;
  EXPECT_FALSE(test::file_exists(dir.file("o.gguf")));
  EXPECT_FALSE(test::file_exists(dir.file("o.gguf.tmp")));
}

}  // namespace
}  // namespace trit::engine
