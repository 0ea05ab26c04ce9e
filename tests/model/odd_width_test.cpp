// Widths that are not a multiple of a packed type's block (1bitLLM's bitnet_b1_58-3B: hidden
// 3200, feed-forward 8640): such layers come as float ternary values, load into TQ2_0 rows padded
// with zero codes (TernaryMatrix::row_in), and compute exactly what the reference computes from
// the file's values (the Vulkan backend's padded rows: backend/vulkan/ops_test.cpp and
// model_test.cpp).
#include <gtest/gtest.h>

#include "io/gguf.h"
#include "model/model.h"
#include "support/files.h"
#include "support/models.h"
#include "support/numeric.h"
#include "support/reference_model.h"

namespace trit::engine {
namespace {

CreateOptions odd_options(uint64_t seed, DType type) {
  CreateOptions o = test::tiny_options(seed, type);
  o.hp.n_embd = 384;  // 4 heads of 96
  o.hp.n_ff = 864;
  o.hp.rope_dim = 96;
  return o;
}

TEST(OddWidths, PaddedRowsComputeTheFilesModel) {
  for (const DType type : {DType::TQ2_0, DType::I2_S}) {
    SCOPED_TRACE(std::string(dtype_name(type)));
    test::TempDir dir;
    const std::string path = test::create_model(dir, "odd.gguf", odd_options(8, type));
    auto f = GgufFile::open(path);
    // 384 inputs fit I2_S's runs of 128, not TQ2_0's blocks; 864 fits neither.
    EXPECT_EQ(f->tensor("blk.0.attn_q.weight").type, type == DType::I2_S ? type : DType::F16);
    EXPECT_EQ(f->tensor("blk.0.ffn_down.weight").type, DType::F16);
    auto model = Model::load(path);
    const BlockWeights& b = model->weights().blocks[0];
    EXPECT_EQ(b.down.m.n_in, 864);
    EXPECT_EQ(b.down.m.stored_in(), 1024);
    EXPECT_EQ(b.q.m.stored_in(), type == DType::I2_S ? 384 : 512);
    test::ReferenceModel ref(path);
    std::vector<int32_t> ids;
    for (int i = 0; i < 11; ++i) ids.push_back((i * 53 + 3) % 512);
    for (bool act_quant : {false, true}) {
      const std::vector<float> got = test::session_logits(*model, ids, {.act_quant = act_quant});
      EXPECT_LT(test::rel_l2(got, ref.logits(ids, act_quant)), act_quant ? 1e-2 : 1e-4)
          << "act_quant " << act_quant;
    }
  }
}

}  // namespace
}  // namespace trit::engine
