// BlockStager reads a streamed block's weights from the file into one of two buffers: the
// weights it hands out hold the file's bytes (compared with the mapping) at other addresses,
// a block read ahead is the one taken, two held buffers leave a third pass to the mapping, a
// file that shrank is an error naming it, and passes that share one model at once give the
// logits each gives alone.
#include "model/block_stager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "support/errors.h"
#include "support/files.h"
#include "support/models.h"

namespace trit::engine {
namespace {

class Stager : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions o = test::tiny_options(17, DType::TQ2_0);
    o.hp.n_layer = 4;
    path_ = test::create_model(dir_, "m.gguf", o);
    model_ = Model::load(path_);
  }
  const std::vector<BlockWeights>& blocks() const { return model_->weights().blocks; }
  test::TempDir dir_;
  std::string path_;
  std::unique_ptr<Model> model_;
};

const LinearWeight* const* linears_of(const BlockWeights& b, const LinearWeight* (&out)[7]) {
  const LinearWeight* ws[] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
  std::memcpy(out, ws, sizeof ws);
  return out;
}

TEST_F(Stager, HandsOutTheFilesBytesFromItsOwnBuffers) {
  BlockStager st(model_->file(), blocks(), model_->weights().output);
  ASSERT_GT(st.buffer_bytes(), 0u);
  for (int64_t l = 0; l < int64_t(blocks().size()); ++l) {
    if (l + 1 < int64_t(blocks().size())) st.ahead(l + 1);
    const BlockStager::Staged* s = st.take(l);
    ASSERT_NE(s, nullptr) << "block " << l;
    const BlockWeights* w = &s->w;
    const LinearWeight* staged[7];
    const LinearWeight* mapped[7];
    linears_of(*w, staged);
    linears_of(blocks()[size_t(l)], mapped);
    for (int i = 0; i < 7; ++i) {
      const TernaryMatrix& a = staged[i]->m;
      const TernaryMatrix& b = mapped[i]->m;
      EXPECT_EQ(staged[i]->name, mapped[i]->name);
      EXPECT_EQ(a.n_in, b.n_in);
      EXPECT_EQ(a.n_out, b.n_out);
      EXPECT_FALSE(model_->file().maps(a.data)) << mapped[i]->name << " still in the mapping";
      const uint64_t n = *tensor_bytes(b.type, b.stored_in(), b.stored_in() * b.n_out);
      EXPECT_EQ(0, std::memcmp(a.data, b.data, n)) << mapped[i]->name;
    }
    st.give(l);
  }
}

// The head's rows in pieces that fit a buffer, in order, each holding the file's bytes.
TEST_F(Stager, ReadsTheHeadInPiecesOfWholeRows) {
  const FloatMatrix& head = model_->weights().output;
  BlockStager st(model_->file(), blocks(), head);
  const int64_t pieces = st.head_pieces(), n_blocks = int64_t(blocks().size());
  ASSERT_GT(pieces, 1) << "the test model's head should take several pieces";
  const uint64_t row = uint64_t(row_bytes(head.type, head.n_in));
  EXPECT_LE(uint64_t(st.head_piece_rows()) * row, st.buffer_bytes());
  int64_t next_row = 0;
  for (int64_t i = 0; i < pieces; ++i) {
    if (i + 1 < pieces) st.ahead(n_blocks + i + 1);
    const BlockStager::Staged* s = st.take(n_blocks + i);
    ASSERT_NE(s, nullptr) << "piece " << i;
    EXPECT_EQ(s->head_row0, next_row);
    EXPECT_EQ(s->head.n_in, head.n_in);
    EXPECT_EQ(s->head.type, head.type);
    EXPECT_FALSE(model_->file().maps(s->head.data));
    EXPECT_EQ(0, std::memcmp(s->head.data, head.data + uint64_t(next_row) * row,
                             uint64_t(s->head.n_out) * row))
        << "piece " << i;
    next_row += s->head.n_out;
    st.give(n_blocks + i);
  }
  EXPECT_EQ(next_row, head.n_out);
}

TEST_F(Stager, TwoHeldBuffersLeaveAThirdPassToTheMapping) {
  BlockStager st(model_->file(), blocks(), model_->weights().output);
  const BlockStager::Staged* a = st.take(0);
  const BlockStager::Staged* b = st.take(1);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->w.q.m.data, b->w.q.m.data);
  st.ahead(2);  // no buffer to read into
  EXPECT_EQ(st.take(2), nullptr);
  // Block 0 taken again while held: the same buffer, held twice.
  EXPECT_EQ(st.take(0), a);
  st.give(0);
  EXPECT_EQ(st.take(2), nullptr) << "block 0 is still held once";
  st.give(0);
  const BlockStager::Staged* c = st.take(2);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->w.q.m.data, a->w.q.m.data) << "block 2 reuses block 0's buffer";
  st.give(1);
  st.give(2);
}

TEST_F(Stager, AFileThatShrankIsAnErrorNamingIt) {
  BlockStager st(model_->file(), blocks(), model_->weights().output);
  const int64_t l = int64_t(blocks().size()) - 1;
  const GgufFile& f = model_->file();
  const GgufTensor& q = f.tensor("blk." + std::to_string(l) + ".attn_q.weight");
  ASSERT_EQ(q.data, blocks().back().q.m.data);
  ASSERT_EQ(0, truncate(path_.c_str(), off_t(f.data_offset() + q.offset + 1)));
  test::expect_error([&] { st.take(l); }, path_ + ": cannot read ");
  // The failure is not kept: asking again reads again (and fails again).
  test::expect_error([&] { st.ahead(l), st.take(l); }, "cannot read");
  ASSERT_NE(st.take(0), nullptr) << "a block before the cut still reads";
  st.give(0);
}

TEST_F(Stager, PassesSharingAModelAtOnceGiveTheirOwnLogits) {
  model_->set_mem_budget(model_->min_stream_bytes());
  ASSERT_TRUE(model_->streaming());
  const std::vector<int32_t> a = {256, 72, 101, 108, 108, 111};
  const std::vector<int32_t> b = {256, 87, 111, 114, 108, 100, 33, 10};
  const test::LogitsRun one{.threads = 1, .n_ctx = 32};
  const std::vector<float> alone_a = test::session_logits(*model_, a, one);
  const std::vector<float> alone_b = test::session_logits(*model_, b, one);
  std::vector<float> got_a, got_b;
  for (int round = 0; round < 4; ++round) {
    std::thread ta([&] { got_a = test::session_logits(*model_, a, one); });
    std::thread tb([&] { got_b = test::session_logits(*model_, b, one); });
    ta.join();
    tb.join();
    EXPECT_EQ(got_a, alone_a) << "round " << round;
    EXPECT_EQ(got_b, alone_b) << "round " << round;
  }
}

}  // namespace
}  // namespace trit::engine
