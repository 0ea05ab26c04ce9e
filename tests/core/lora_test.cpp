// LoRA adapters' own rules (core/lora.h): scaling, target names, layer names and their order,
// and the base shapes a model gives them (model/lora_set.h).
#include "core/lora.h"

#include <gtest/gtest.h>

#include "model/lora_set.h"
#include "support/adapters.h"
#include "support/errors.h"
#include "train/lora_init.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::small_hparams;

// ---------------------------------------------------------------------------------------------
// Scaling, targets, names

TEST(Lora, Scaling) {
  LoraAdapter a;
  a.alpha = 16.0f;
  EXPECT_FLOAT_EQ(a.scaling(8), 2.0f);
  a.rslora = true;
  EXPECT_FLOAT_EQ(a.scaling(16), 4.0f);
  EXPECT_FLOAT_EQ(a.scaling(4), 8.0f);
  EXPECT_CONTAINS(error_of([&] { a.scaling(0); }), "rank");
}

TEST(Lora, TargetSuffixes) {
  using V = std::vector<std::string>;
  EXPECT_EQ(lora_target_suffixes("all"),
            (V{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}));
  EXPECT_EQ(
      lora_target_suffixes("q,k,v,o,gate,up,down,head"),
      (V{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"}));
  EXPECT_EQ(lora_target_suffixes(" v , q "), (V{"attn_q", "attn_v"}));
  EXPECT_EQ(lora_target_suffixes("head,all").back(), "output");
  EXPECT_EQ(lora_target_suffixes("head"), (V{"output"}));
  EXPECT_EQ(lora_target_suffixes("attn_q,ffn_down"), (V{"attn_q", "ffn_down"}));
  EXPECT_CONTAINS(error_of([] { lora_target_suffixes("q,embed"); }), "'embed'");
  EXPECT_CONTAINS(error_of([] { lora_target_suffixes(""); }), "empty");
  EXPECT_CONTAINS(error_of([] { lora_target_suffixes("q,,v"); }), "empty");
  EXPECT_EQ(lora_target_short_name("attn_output"), "o");
  EXPECT_EQ(lora_target_short_name("output"), "head");
  for (const std::string& s : lora_target_suffixes("all,head")) {
    EXPECT_EQ(lora_target_suffixes(lora_target_short_name(s)), V{s});
  }
}

TEST(Lora, LayerNames) {
  auto t = parse_lora_layer_name("blk.12.ffn_down.weight");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->layer, 12);
  EXPECT_EQ(t->what, "ffn_down");
  EXPECT_EQ(lora_layer_name(*t), "blk.12.ffn_down.weight");
  t = parse_lora_layer_name("output.weight");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->layer, -1);
  EXPECT_EQ(lora_layer_name(*t), "output.weight");
  for (const char* bad : {"blk.0.attn_norm.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight",
                          "token_embd.weight", "blk.0.attn_q.scale", "blk..attn_q.weight"}) {
    EXPECT_FALSE(parse_lora_layer_name(bad)) << bad;
  }
  const HParams hp = small_hparams();
  EXPECT_EQ(lora_base_shape(hp, "blk.1.attn_k.weight", "x"), (std::pair<int64_t, int64_t>(32, 16)));
  EXPECT_EQ(lora_base_shape(hp, "output.weight", "x"), (std::pair<int64_t, int64_t>(32, 50)));
  EXPECT_CONTAINS(error_of([&] { lora_base_shape(hp, "blk.2.attn_k.weight", "where"); }),
                  "block 2 does not exist");

  LoraAdapter a = lora_init(hp, "all,head", 2, 4.0f, false, 1);
  const std::vector<std::string> order = lora_layer_order(a);
  ASSERT_EQ(order.size(), 15u);
  EXPECT_EQ(order[0], "blk.0.attn_q.weight");
  EXPECT_EQ(order[6], "blk.0.ffn_down.weight");
  EXPECT_EQ(order[7], "blk.1.attn_q.weight");
  EXPECT_EQ(order[14], "output.weight");
}

}  // namespace
}  // namespace trit::engine
