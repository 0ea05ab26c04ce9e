// GGUF reader against hostile input: every bad file is generated here and must give one
// trit::Error line naming the file and the field, never a crash or a huge allocation.
#include <gtest/gtest.h>

#include <initializer_list>
#include <random>
#include <string>
#include <string_view>

#include "core/error.h"
#include "io/gguf.h"
#include "support/files.h"
#include "support/gguf_builder.h"

namespace trit::engine {
namespace {

using test::GgufBytes;
using test::TempDir;

class GgufBadInput : public ::testing::Test {
 protected:
  // Writes the bytes, opens them, and checks the error names the file and every part.
  void expect_error(const std::string& bytes, std::initializer_list<std::string_view> parts) {
    const std::string path = dir_.file("bad.gguf");
    test::write_file(path, bytes);
    expect_open_error(path, parts);
  }
  void expect_open_error(const std::string& path, std::initializer_list<std::string_view> parts) {
    try {
      GgufFile::open(path);
      ADD_FAILURE() << "opened without error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      for (std::string_view part : parts) EXPECT_NE(msg.find(part), std::string::npos) << msg;
    }
  }
  TempDir dir_;
};

// A valid file: one u32 key, one f32 tensor of 4 elements.
std::string valid_file() {
  GgufBytes f;
  f.header(1, 1).kv_u32("general.x", 1).info("w", {4}, 0, 0).data(16);
  return f.b;
}

TEST_F(GgufBadInput, ValidBaseOpens) {
  const std::string path = dir_.file("ok.gguf");
  test::write_file(path, valid_file());
  EXPECT_EQ(GgufFile::open(path)->tensor("w").nbytes, 16u);
}

TEST_F(GgufBadInput, TruncatedAtEveryCutPoint) {
  // A writer file with strings, an array, nested array and two tensors; cut before every byte
  // up to the end of the last tensor's data.
  GgufWriter w;
  w.set_string("general.architecture", "bitnet");
  w.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "bc", ""}));
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.arr.item_type = GgufType::ARRAY;
  nested.arr.arrays.push_back(GgufValue::f32_array({1.0f, 2.0f}).arr);
  w.set("x.nested", nested);
  w.set_f32("x.eps", 1e-5f);
  const std::vector<uint8_t> q(34, 5), t(8, 6);
  w.add_tensor("q", DType::Q8_0, {32}, q.data());
  w.add_tensor("t", DType::F32, {2}, t.data());
  const std::string full_path = dir_.file("full.gguf");
  w.write(full_path);
  const std::string full = test::read_file(full_path);
  auto f = GgufFile::open(full_path);
  const uint64_t end = f->data_offset() + f->tensors()[1].offset + 8;
  ASSERT_LE(end, full.size());
  for (uint64_t cut = 0; cut < end; ++cut) {
    SCOPED_TRACE(cut);
    expect_error(full.substr(0, cut), {});
  }
  test::write_file(dir_.file("exact.gguf"), full.substr(0, end));
  EXPECT_NO_THROW(GgufFile::open(dir_.file("exact.gguf")));
}

TEST_F(GgufBadInput, TruncationNamesTheField) {
  const std::string v = valid_file();
  expect_error(v.substr(0, 2), {"header", "magic", "file is 2 bytes"});
  expect_error(v.substr(0, 6), {"header", "version"});
  expect_error(v.substr(0, 30), {"header", "count"});
  GgufBytes f;  // counts that fit, then a key and a value cut short
  f.header(0, 1).kv_u32("general.some_longer_key", 1);
  expect_error(f.b.substr(0, 40), {"metadata item 0", "key length 23 exceeds the 8 bytes left"});
  expect_error(f.b.substr(0, f.b.size() - 2),
               {"metadata key 'general.some_longer_key'", "value needs 4 bytes"});
}

TEST_F(GgufBadInput, MagicAndVersion) {
  std::string v = valid_file();
  v[3] = 'X';
  expect_error(v, {"magic", "GGUX"});
  expect_error("", {"magic", "file is 0 bytes"});
  GgufBytes f;
  expect_error(f.header(0, 0, 1).b, {"version 1"});
  expect_error(f.header(0, 0, 4).b, {"version 4"});
  expect_error(f.header(0, 0, 0x03000000).b, {"big-endian"});
}

TEST_F(GgufBadInput, HugeCounts) {
  GgufBytes f;
  expect_error(f.header(uint64_t(1) << 60, 0).b, {"tensor count 1152921504606846976"});
  expect_error(f.header(0, uint64_t(1) << 60).b, {"metadata count"});
  expect_error(f.header(0, ~uint64_t(0)).b, {"metadata count"});
}

TEST_F(GgufBadInput, HugeStringLength) {
  GgufBytes f;
  f.header(0, 1).str("general.name").u32(8).u64(uint64_t(1) << 60).b.append(120, 'x');
  expect_error(f.b, {"metadata key 'general.name': string length 1152921504606846976 exceeds "
                     "the 120 bytes left in the file"});
  GgufBytes g;
  g.header(0, 1).u64(~uint64_t(0)).b.append(20, 'k');
  expect_error(g.b, {"metadata item 0", "key length 18446744073709551615"});
  GgufBytes h;
  h.header(0, 1).u64(70000).b.append(70000 + 4 + 4, 'k');
  expect_error(h.b, {"metadata item 0", "key length 70000 exceeds 65535"});
}

TEST_F(GgufBadInput, HugeArrayCount) {
  GgufBytes f;
  f.header(0, 1).str("general.list").u32(9).u32(4).u64(uint64_t(1) << 40).u32(1).u32(2);
  expect_error(f.b, {"metadata key 'general.list'", "array count 1099511627776"});
  GgufBytes s;
  s.header(0, 1).str("tokenizer.ggml.tokens").u32(9).u32(8).u64(uint64_t(1) << 40).str("a");
  expect_error(s.b, {"metadata key 'tokenizer.ggml.tokens'", "array count"});
  GgufBytes n;  // an array of arrays whose inner count is huge
  n.header(0, 1).str("x.nested").u32(9).u32(9).u64(1).u32(0).u64(~uint64_t(0) >> 1);
  expect_error(n.b, {"metadata key 'x.nested'", "array count"});
  GgufBytes str_item;  // an array of strings, one of which claims 2^62 bytes
  str_item.header(0, 1).str("x.s").u32(9).u32(8).u64(2).str("ok").u64(uint64_t(1) << 62);
  expect_error(str_item.b, {"metadata key 'x.s'", "string length 4611686018427387904"});
}

TEST_F(GgufBadInput, DeeplyNestedArrays) {
  GgufBytes f;
  f.header(0, 1).str("x.deep");
  f.u32(9);
  for (int k = 0; k < 1000; ++k) f.u32(9).u64(1);
  expect_error(f.b, {"metadata key 'x.deep'", "nested"});
}

TEST_F(GgufBadInput, UnknownMetadataTypes) {
  GgufBytes f;
  f.header(0, 1).str("x.weird").u32(13).u32(0);
  expect_error(f.b, {"metadata key 'x.weird'", "value type 13"});
  GgufBytes a;
  a.header(0, 1).str("x.arr").u32(9).u32(13).u64(0);
  expect_error(a.b, {"metadata key 'x.arr'", "array item type 13"});
}

TEST_F(GgufBadInput, DuplicateKey) {
  GgufBytes f;
  f.header(0, 2).kv_u32("general.x", 1).kv_u32("general.x", 2);
  expect_error(f.b, {"metadata key 'general.x'", "duplicate"});
}

TEST_F(GgufBadInput, Alignment) {
  for (uint32_t a : {0u, 48u, 3u, 1u << 30}) {
    SCOPED_TRACE(a);
    GgufBytes f;
    f.header(1, 1).kv_u32("general.alignment", a).info("w", {4}, 0, 0).data(16);
    expect_error(f.b, {"general.alignment", std::to_string(a)});
  }
  GgufBytes s;
  s.header(0, 1).str("general.alignment").u32(8).str("32");
  expect_error(s.b, {"general.alignment", "expected u32, found string"});
  // A valid non-default alignment.
  GgufBytes ok;
  ok.header(1, 1).kv_u32("general.alignment", 64).info("w", {4}, 0, 0).data(16, 64);
  test::write_file(dir_.file("a64.gguf"), ok.b);
  EXPECT_EQ(GgufFile::open(dir_.file("a64.gguf"))->data_offset() % 64, 0u);
}

TEST_F(GgufBadInput, Dims) {
  GgufBytes f;
  f.header(1, 0).str("blk.0.attn_q.weight").u32(5);
  f.b.append(100, '\x01');
  expect_error(f.b, {"tensor blk.0.attn_q.weight", "n_dims 5"});
  GgufBytes g;
  g.header(1, 0).str("w").u32(0x80000000u);
  g.b.append(100, '\x01');
  expect_error(g.b, {"tensor w", "n_dims 2147483648"});
}

TEST_F(GgufBadInput, NonPositiveNe) {
  GgufBytes z;
  z.header(1, 0).info("w", {4, 0}, 0, 0).data(16);
  expect_error(z.b, {"tensor w", "ne[1] is 0"});
  GgufBytes n;
  n.header(1, 0).info("w", {uint64_t(-5)}, 0, 0).data(16);
  expect_error(n.b, {"tensor w", "ne[0] is -5"});
}

TEST_F(GgufBadInput, NeProductOverflow) {
  GgufBytes f;
  f.header(1, 0).info("w", {uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0).data(16);
  expect_error(f.b, {"tensor w", "ne", "overflow"});
  GgufBytes g;  // fits in int64 elements but not in bytes
  g.header(1, 0).info("w", {uint64_t(1) << 62}, 0, 0).data(16);
  expect_error(g.b, {"tensor w", "overflow"});
}

TEST_F(GgufBadInput, UnknownTensorTypes) {
  struct Case {
    uint32_t id;
    std::vector<std::string_view> parts;
  };
  const std::vector<Case> cases = {
      {37, {"type 37", "I8_S", "bitnet.cpp", "llama.cpp"}},
      {38, {"type 38", "TL1"}},
      {39, {"type 39", "TL2", "MXFP4"}},
      {12, {"type 12", "Q4_K"}},
      {999, {"type 999"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.id);
    GgufBytes f;
    f.header(1, 0).info("blk.0.ffn_up.weight", {256}, c.id, 0).data(256);
    const std::string path = dir_.file("bad.gguf");
    test::write_file(path, f.b);
    expect_open_error(path, {"tensor blk.0.ffn_up.weight"});
    for (std::string_view p : c.parts) expect_open_error(path, {p});
  }
}

TEST_F(GgufBadInput, BlockSize) {
  GgufBytes f;
  f.header(1, 0).info("blk.1.attn_k.weight", {100}, 35, 0).data(66);
  expect_error(f.b, {"tensor blk.1.attn_k.weight", "ne[0] = 100", "tq2_0", "256"});
  GgufBytes g;  // I2_S needs multiples of 128
  g.header(1, 0).info("i", {64}, 36, 0).data(64);
  expect_error(g.b, {"tensor i", "ne[0] = 64", "i2_s", "128"});
}

TEST_F(GgufBadInput, OffsetMisaligned) {
  GgufBytes f;
  f.header(1, 0).info("w", {4}, 0, 4).data(32);
  expect_error(f.b, {"tensor w", "offset 4", "alignment 32"});
}

TEST_F(GgufBadInput, DataBeyondEnd) {
  GgufBytes f;
  f.header(1, 0).info("blk.3.ffn_up.weight", {1024}, 0, 0).data(100);
  const uint64_t start = f.b.size() - 100;
  expect_error(f.b, {"tensor blk.3.ffn_up.weight", "data ends at byte " +
                                                       std::to_string(start + 4096) + ", file is " +
                                                       std::to_string(f.b.size()) + " bytes"});
  GgufBytes g;  // offset so large that offset + size wraps around
  g.header(1, 0).info("w", {4}, 0, ~uint64_t(31)).data(16);
  expect_error(g.b, {"tensor w", "data ends past byte 2^64"});
  GgufBytes h;  // second tensor starts past the end
  h.header(2, 0).info("a", {4}, 0, 0).info("b", {4}, 0, 1 << 20).data(16);
  expect_error(h.b, {"tensor b", "data ends"});
}

TEST_F(GgufBadInput, ControlBytesInNamesStayOnOneLine) {
  GgufBytes f;
  f.header(1, 0).info("bad\nname", {4, 0}, 0, 0).data(16);
  expect_error(f.b, {"tensor bad\\x0aname", "ne[1]"});
}

TEST_F(GgufBadInput, DuplicateTensorName) {
  GgufBytes f;
  f.header(2, 0).info("blk.0.attn_q.weight", {4}, 0, 0).info("blk.0.attn_q.weight", {4}, 0, 32);
  f.data(48);
  expect_error(f.b, {"tensor blk.0.attn_q.weight", "duplicate tensor name"});
}

TEST_F(GgufBadInput, NotARegularFile) {
  expect_open_error(dir_.path(), {"not a regular file"});
  expect_open_error(dir_.file("missing.gguf"), {"cannot open"});
}

// Random corruption of the header and infos of a valid file: each variant either opens or
// throws trit::Error; under ASan and UBSan this also checks that nothing reads out of bounds.
TEST_F(GgufBadInput, RandomCorruption) {
  GgufWriter w;
  w.set_string("general.architecture", "bitnet");
  w.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "bc"}));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array({0.5f, 1.0f}));
  const std::vector<uint8_t> d(66, 1);
  w.add_tensor("t", DType::TQ2_0, {256}, d.data());
  w.add_tensor("u", DType::F16, {3, 2}, d.data());
  w.write(dir_.file("base.gguf"));
  const std::string base = test::read_file(dir_.file("base.gguf"));
  const uint64_t header_end = GgufFile::open(dir_.file("base.gguf"))->data_offset();
  std::mt19937 rng(1234);
  const std::string path = dir_.file("fuzz.gguf");
  int opened = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = base;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % header_end;
      b[at] = (rng() % 2) ? char(rng()) : char(b[at] ^ (1 << (rng() % 8)));
    }
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    test::write_file(path, b);
    try {
      auto f = GgufFile::open(path);
      ++opened;
      for (const GgufTensor& t : f->tensors()) {
        ASSERT_LE(f->data_offset() + t.offset + t.nbytes, f->file_size());
        unsigned sum = 0;  // touch every byte: a mapping read out of bounds would fault
        for (uint64_t k = 0; k < t.nbytes; ++k) sum += t.data[k];
        EXPECT_GE(sum, 0u);
      }
    } catch (const Error& e) {
      const std::string msg = e.what();
      ASSERT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      ASSERT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace trit::engine
