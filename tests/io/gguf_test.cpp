// GGUF reader and writer: round trips of every metadata type and tensor type, alignment,
// streaming, and a file assembled byte by byte.
#include "io/gguf.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <random>

#include "core/error.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/gguf_builder.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::TempDir;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = uint8_t(rng());
  return v;
}

GgufValue scalar(GgufType t, int64_t i, double f = 0) {
  GgufValue v;
  v.type = t;
  v.i = i;
  v.f = f;
  return v;
}

GgufValue array_of(GgufArray a) {
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.arr = std::move(a);
  return v;
}

void expect_same_array(const GgufArray& a, const GgufArray& b) {
  ASSERT_EQ(a.item_type, b.item_type);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a.ints, b.ints);
  EXPECT_EQ(a.floats, b.floats);
  EXPECT_EQ(a.strings, b.strings);
  ASSERT_EQ(a.arrays.size(), b.arrays.size());
  for (size_t k = 0; k < a.arrays.size(); ++k) expect_same_array(a.arrays[k], b.arrays[k]);
}

TEST(Gguf, MetadataRoundTripEveryType) {
  TempDir dir;
  std::vector<std::pair<std::string, GgufValue>> kv;
  auto add = [&kv](std::string key, GgufValue value) {
    kv.emplace_back(std::move(key), std::move(value));
  };
  add("t.u8", scalar(GgufType::U8, 250));
  add("t.i8", scalar(GgufType::I8, -100));
  add("t.u16", scalar(GgufType::U16, 65000));
  add("t.i16", scalar(GgufType::I16, -32000));
  add("t.u32", GgufValue::u32(4000000000u));
  add("t.i32", GgufValue::i32(-2000000000));
  add("t.u64", GgufValue::u64(18446744073709551615ull));
  add("t.i64", scalar(GgufType::I64, -9000000000000000000ll));
  add("t.f32", GgufValue::f32(1.5e-5f));
  add("t.f64", scalar(GgufType::F64, 0, 3.141592653589793));
  add("t.bool_true", GgufValue::boolean(true));
  add("t.bool_false", GgufValue::boolean(false));
  add("t.string", GgufValue::string(std::string("h\xc3\xa9llo\0w", 8)));
  add("t.empty_string", GgufValue::string(""));
  add("t.strings", GgufValue::string_array({"a", "", "Ġthe", "left right"}));
  add("t.i32s", GgufValue::i32_array({1, -2, 2147483647, -2147483647 - 1}));
  add("t.f32s", GgufValue::f32_array({0.5f, -1.25f, 1e30f}));
  GgufArray u8s{GgufType::U8, {0, 1, 255}, {}, {}, {}};
  add("t.u8s", array_of(u8s));
  GgufArray u64s{GgufType::U64, {int64_t(18446744073709551615ull), 7}, {}, {}, {}};
  add("t.u64s", array_of(u64s));
  GgufArray bools{GgufType::BOOL, {1, 0, 1}, {}, {}, {}};
  add("t.bools", array_of(bools));
  GgufArray f64s{GgufType::F64, {}, {1e-300, -2.5}, {}, {}};
  add("t.f64s", array_of(f64s));
  GgufArray i16s{GgufType::I16, {-5, 5}, {}, {}, {}};
  add("t.i16s", array_of(i16s));
  GgufArray empty{GgufType::I32, {}, {}, {}, {}};
  add("t.empty", array_of(empty));
  GgufArray nested{GgufType::ARRAY, {}, {}, {}, {}};
  nested.arrays.push_back(GgufArray{GgufType::I32, {1, 2, 3}, {}, {}, {}});
  nested.arrays.push_back(GgufArray{GgufType::STRING, {}, {}, {"x", "yz"}, {}});
  nested.arrays.push_back(GgufArray{GgufType::ARRAY, {}, {}, {}, {empty, u8s}});
  nested.arrays.push_back(empty);
  add("t.nested", array_of(nested));

  GgufWriter w;
  for (const auto& [k, v] : kv) w.set(k, v);
  w.set_u32("t.u32", 4000000000u);  // replacing keeps the order
  const std::string path = dir.file("meta.gguf");
  w.write(path);

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->tensors().empty());
  ASSERT_EQ(f->metadata().size(), kv.size());
  for (size_t k = 0; k < kv.size(); ++k) {
    const auto& [key, want] = kv[k];
    const auto& [got_key, got] = f->metadata()[k];
    SCOPED_TRACE(key);
    EXPECT_EQ(got_key, key);
    ASSERT_EQ(got.type, want.type);
    if (want.type == GgufType::F32) {
      EXPECT_EQ(float(got.f), float(want.f));
    } else if (want.type == GgufType::F64) {
      EXPECT_EQ(got.f, want.f);
    } else if (want.type == GgufType::STRING) {
      EXPECT_EQ(got.s, want.s);
    } else if (want.type == GgufType::ARRAY) {
      expect_same_array(got.arr, want.arr);
    } else {
      EXPECT_EQ(got.i, want.i);
    }
  }
  EXPECT_EQ(f->get_array("t.f32s", GgufType::F32).floats[1], -1.25);
  EXPECT_EQ(f->get_array("t.strings", GgufType::STRING).strings[2], "Ġthe");
}

struct TypeCase {
  DType type;
  std::vector<int64_t> ne;
  uint64_t nbytes;
};

TEST(Gguf, TensorRoundTripEveryDType) {
  const std::vector<TypeCase> cases = {
      {DType::F32, {3, 2}, 24},
      {DType::F16, {5}, 10},
      {DType::BF16, {4, 3}, 24},
      {DType::Q8_0, {64, 2}, 4 * 34},
      {DType::Q6_K, {256, 2}, 2 * 210},
      {DType::TQ1_0, {256, 3}, 3 * 54},
      {DType::TQ2_0, {512, 1, 1}, 2 * 66},
      {DType::I2_S, {128, 3}, 96 + 32},
      {DType::F32, {1, 1, 1, 2}, 8},
  };
  TempDir dir;
  GgufWriter w;
  std::vector<std::vector<uint8_t>> data;
  for (size_t k = 0; k < cases.size(); ++k) {
    data.push_back(random_bytes(cases[k].nbytes, uint32_t(k)));
    const size_t idx = w.add_tensor(cat("t", k, ".", dtype_name(cases[k].type)), cases[k].type,
                                    cases[k].ne, data.back().data());
    EXPECT_EQ(idx, k);
    EXPECT_EQ(w.tensor_nbytes(idx), cases[k].nbytes);
  }
  EXPECT_EQ(w.tensor_count(), cases.size());
  w.set_string("general.architecture", "bitnet");
  const std::string path = dir.file("tensors.gguf");
  w.write(path);

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  ASSERT_EQ(f->tensors().size(), cases.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    const GgufTensor& t = f->tensors()[k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(&t, &f->tensor(t.name));
    EXPECT_EQ(t.type, cases[k].type);
    EXPECT_EQ(t.ne, cases[k].ne);
    EXPECT_EQ(t.nbytes, cases[k].nbytes);
    EXPECT_EQ(t.offset % 32, 0u);
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(std::memcmp(t.data, data[k].data(), data[k].size()), 0);
  }
  EXPECT_EQ(f->tensor("t7.i2_s").n_elements(), 384);
  EXPECT_EQ(f->tensor("t7.i2_s").rows(), 3);
  EXPECT_EQ(f->find_tensor("nope"), nullptr);
  EXPECT_NE(error_of([&] { f->tensor("nope"); }).find(path + ": missing tensor nope"),
            std::string::npos);
  // Padding after each tensor, as llama.cpp and gguf-py write it.
  EXPECT_EQ(f->file_size() % 32, 0u);
}

TEST(Gguf, Alignment) {
  TempDir dir;
  GgufWriter w;
  w.set_alignment(64);
  const auto a = random_bytes(10, 1), b = random_bytes(6, 2);
  w.add_tensor("a", DType::F16, {5}, a.data());
  w.add_tensor("b", DType::F16, {3}, b.data());
  const std::string path = dir.file("aligned.gguf");
  w.write(path);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->get_u32("general.alignment"), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->tensors()[1].offset, 64u);
  EXPECT_EQ(std::memcmp(f->tensors()[1].data, b.data(), 6), 0);
  // The padding is zeros.
  const std::string bytes = test::read_file(path);
  for (uint64_t k = f->data_offset() + 10; k < f->data_offset() + 64; ++k) EXPECT_EQ(bytes[k], 0);

  EXPECT_THROW(w.set_alignment(0), Error);
  EXPECT_THROW(w.set_alignment(48), Error);
  EXPECT_THROW(w.set_alignment(1u << 30), Error);
}

TEST(Gguf, StreamingInOddPiecesEqualsWrite) {
  TempDir dir;
  const auto x = random_bytes(4 * 34, 3), y = random_bytes(66 * 3, 4), z = random_bytes(4, 5);
  auto declare = [&](GgufWriter& w, bool with_data) {
    w.set_string("general.name", "stream");
    w.add_tensor("x", DType::Q8_0, {128}, with_data ? x.data() : nullptr);
    w.add_tensor("y", DType::TQ2_0, {256, 3}, with_data ? y.data() : nullptr);
    w.add_tensor("z", DType::F32, {1}, with_data ? z.data() : nullptr);
  };
  GgufWriter whole;
  declare(whole, true);
  whole.write(dir.file("whole.gguf"));

  std::vector<uint8_t> all(x);
  all.insert(all.end(), y.begin(), y.end());
  all.insert(all.end(), z.begin(), z.end());
  GgufWriter streamed;
  declare(streamed, false);
  streamed.begin(dir.file("streamed.gguf"));
  EXPECT_TRUE(test::file_exists(dir.file("streamed.gguf.tmp")));
  EXPECT_FALSE(test::file_exists(dir.file("streamed.gguf")));
  size_t pos = 0, piece = 1;
  while (pos < all.size()) {
    const size_t n = std::min(piece, all.size() - pos);
    streamed.append(all.data() + pos, n);
    pos += n;
    piece = piece * 3 + 2;  // 1, 5, 17, 53, ... crosses tensor boundaries mid-piece
  }
  streamed.append(nullptr, 0);
  streamed.finish();
  EXPECT_FALSE(test::file_exists(dir.file("streamed.gguf.tmp")));
  EXPECT_EQ(test::read_file(dir.file("whole.gguf")), test::read_file(dir.file("streamed.gguf")));
}

TEST(Gguf, StreamingCountsBytes) {
  TempDir dir;
  const std::string path = dir.file("count.gguf");
  GgufWriter w;
  w.add_tensor("a", DType::F32, {4});
  w.add_tensor("b", DType::F32, {2});
  w.begin(path);
  const std::vector<uint8_t> bytes(32, 7);
  std::string msg = error_of([&] { w.append(bytes.data(), 25); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("24 bytes"), std::string::npos) << msg;
  w.append(bytes.data(), 20);
  msg = error_of([&] { w.finish(); });
  EXPECT_NE(msg.find("tensor b: got 4 of 8 bytes"), std::string::npos) << msg;
  w.append(bytes.data(), 4);
  w.finish();
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->tensors()[1].data[3], 7);
}

TEST(Gguf, UnfinishedWriterLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.file("gone.gguf");
  {
    GgufWriter w;
    w.add_tensor("a", DType::F32, {1024});
    w.begin(path);
    const std::vector<uint8_t> half(2048, 1);
    w.append(half.data(), half.size());
    EXPECT_TRUE(test::file_exists(path + ".tmp"));
  }
  EXPECT_FALSE(test::file_exists(path));
  EXPECT_FALSE(test::file_exists(path + ".tmp"));
}

TEST(Gguf, WriterRefusesBadShapesAndMissingData) {
  GgufWriter w;
  std::string msg = error_of([&] { w.add_tensor("blk.0.ffn_up.weight", DType::TQ2_0, {100, 2}); });
  EXPECT_NE(msg.find("blk.0.ffn_up.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ne[0] = 100"), std::string::npos) << msg;
  EXPECT_NE(msg.find("256"), std::string::npos) << msg;
  EXPECT_THROW(w.add_tensor("i2s", DType::I2_S, {64}), Error);
  EXPECT_THROW(w.add_tensor("zero", DType::F32, {0}), Error);
  EXPECT_THROW(w.add_tensor("neg", DType::F32, {4, -1}), Error);
  EXPECT_THROW(w.add_tensor("dims", DType::F32, {1, 1, 1, 1, 1}), Error);
  EXPECT_THROW(w.add_tensor("none", DType::F32, {}), Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), DType::F32, {1}), Error);
  EXPECT_THROW(w.add_tensor("big", DType::F32, {int64_t(1) << 40, int64_t(1) << 40}), Error);
  w.add_tensor("ok", DType::F32, {1});
  msg = error_of([&] { w.add_tensor("ok", DType::F32, {1}); });
  EXPECT_NE(msg.find("duplicate"), std::string::npos) << msg;
  TempDir dir;
  msg = error_of([&] { w.write(dir.file("x.gguf")); });
  EXPECT_NE(msg.find("tensor ok: no data"), std::string::npos) << msg;
  EXPECT_FALSE(test::file_exists(dir.file("x.gguf.tmp")));
  GgufValue bad;
  bad.type = GgufType(13);
  EXPECT_THROW(w.set("k", bad), Error);
}

TEST(Gguf, WriteErrorNamesPath) {
  TempDir dir;
  GgufWriter w;
  const std::string path = dir.file("no/such/dir/m.gguf");
  std::string msg = error_of([&] { w.write(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;

  // A full disk, simulated by a file size limit.
  const std::vector<uint8_t> data(size_t(1) << 20, 3);
  w.add_tensor("big", DType::F32, {int64_t(data.size() / 4)}, data.data());
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 65536;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string full = dir.file("full.gguf");
  msg = error_of([&] { w.write(full); });
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(msg.find(full), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_FALSE(test::file_exists(full));
  EXPECT_FALSE(test::file_exists(full + ".tmp"));
}

TEST(Gguf, ParsesHandAssembledFile) {
  test::GgufBytes f;  // independent of the writer
  f.b = "GGUF";
  f.u32(3);
  f.u64(2);  // tensors
  f.u64(4);  // metadata
  f.str("general.architecture");
  f.u32(8);
  f.str("bitnet");
  f.str("bitnet.block_count");
  f.u32(4);
  f.u32(30);
  f.str("bitnet.rope.freq_base");
  f.u32(6);
  const float theta = 500000.0f;
  f.b.append(reinterpret_cast<const char*>(&theta), 4);
  f.str("tokenizer.ggml.token_type");
  f.u32(9);
  f.u32(5);  // i32 items
  f.u64(3);
  f.u32(1);
  f.u32(uint32_t(-3));
  f.u32(6);
  // token_embd.weight: f32, ne = [2, 3] at offset 0; s: f16, ne = [1] at offset 32.
  f.str("token_embd.weight");
  f.u32(2);
  f.u64(2);
  f.u64(3);
  f.u32(0);
  f.u64(0);
  f.str("s");
  f.u32(1);
  f.u64(1);
  f.u32(1);
  f.u64(32);
  const size_t infos_end = f.b.size();
  f.b.resize((infos_end + 31) / 32 * 32, '\0');
  const size_t data_offset = f.b.size();
  for (int k = 0; k < 6; ++k) {
    const float v = float(k) + 0.5f;
    f.b.append(reinterpret_cast<const char*>(&v), 4);
  }
  f.b.resize(f.b.size() + 8, '\0');
  f.b.append("\x00\x3c", 2);  // f16 1.0

  TempDir dir;
  const std::string path = dir.file("hand.gguf");
  test::write_file(path, f.b);
  auto g = GgufFile::open(path);
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->data_offset(), data_offset);
  EXPECT_EQ(g->file_size(), f.b.size());
  EXPECT_EQ(g->get_string("general.architecture"), "bitnet");
  EXPECT_EQ(g->get_u32("bitnet.block_count"), 30u);
  EXPECT_EQ(g->get_int("bitnet.block_count"), 30);
  EXPECT_EQ(g->get_f32("bitnet.rope.freq_base"), 500000.0f);
  EXPECT_EQ(g->get_array("tokenizer.ggml.token_type", GgufType::I32).ints,
            (std::vector<int64_t>{1, -3, 6}));
  const GgufTensor& e = g->tensor("token_embd.weight");
  EXPECT_EQ(e.type, DType::F32);
  EXPECT_EQ(e.ne, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(e.n_elements(), 6);
  EXPECT_EQ(e.rows(), 3);
  EXPECT_EQ(e.nbytes, 24u);
  float v5;
  std::memcpy(&v5, e.data + 20, 4);
  EXPECT_EQ(v5, 5.5f);
  const GgufTensor& s = g->tensor("s");
  EXPECT_EQ(s.type, DType::F16);
  EXPECT_EQ(s.offset, 32u);
  EXPECT_EQ(s.data[1], 0x3c);

  // Version 2 has the same layout.
  f.b[4] = 2;
  test::write_file(path, f.b);
  EXPECT_EQ(GgufFile::open(path)->version(), 2u);
}

TEST(Gguf, GettersNameKeyAndTypes) {
  TempDir dir;
  GgufWriter w;
  w.set_string("general.name", "m");
  w.set("neg", GgufValue::i32(-1));
  w.set("big", GgufValue::u64(uint64_t(1) << 40));
  w.set("huge", GgufValue::u64(~uint64_t(0)));
  w.set("small", GgufValue::u64(7));
  w.set_f32("eps", 1e-5f);
  w.set_bool("flag", true);
  w.set("tokens", GgufValue::string_array({"a"}));
  const std::string path = dir.file("getters.gguf");
  w.write(path);
  auto f = GgufFile::open(path);

  std::string msg = error_of([&] { f->get_u32("general.name"); });
  EXPECT_EQ(msg, path + ": metadata key 'general.name': expected u32, found string");
  msg = error_of([&] { f->get_string("eps"); });
  EXPECT_EQ(msg, path + ": metadata key 'eps': expected string, found f32");
  msg = error_of([&] { f->get_array("tokens", GgufType::I32); });
  EXPECT_EQ(msg, path + ": metadata key 'tokens': expected array of i32, found array of string");
  msg = error_of([&] { f->get_f32("missing.key"); });
  EXPECT_EQ(msg, path + ": metadata key 'missing.key': missing (expected f32)");
  msg = error_of([&] { f->get_u32("neg"); });
  EXPECT_NE(msg.find("'neg': value -1 (i32) does not fit in u32"), std::string::npos) << msg;
  EXPECT_THROW(f->get_u32("big"), Error);
  EXPECT_THROW(f->get_int("huge"), Error);
  EXPECT_THROW(f->get_bool_or("eps", false), Error);
  EXPECT_THROW(f->get_f32_or("general.name", 1.0f), Error);
  EXPECT_THROW(f->get_string_or("flag", "x"), Error);
  EXPECT_THROW(f->get_u32_or("eps", 1), Error);

  EXPECT_EQ(f->get_u32("small"), 7u);
  EXPECT_EQ(f->get_int("big"), int64_t(1) << 40);
  EXPECT_EQ(f->get_int("neg"), -1);
  EXPECT_EQ(f->get_u32_or("nope", 9), 9u);
  EXPECT_EQ(f->get_f32_or("nope", 2.5f), 2.5f);
  EXPECT_EQ(f->get_f32_or("eps", 2.5f), 1e-5f);
  EXPECT_TRUE(f->get_bool_or("flag", false));
  EXPECT_FALSE(f->get_bool_or("nope", false));
  EXPECT_EQ(f->get_string_or("nope", "fb"), "fb");
  EXPECT_EQ(f->get_string_or("general.name", "fb"), "m");
  EXPECT_TRUE(f->has("eps"));
  EXPECT_FALSE(f->has("eps2"));
}

TEST(Gguf, WriterKeyEditing) {
  GgufWriter w;
  w.set_u32("a", 1);
  w.set_u32("b", 2);
  w.set_string("a", "x");
  ASSERT_NE(w.find("a"), nullptr);
  EXPECT_EQ(w.find("a")->s, "x");
  w.remove("a");
  EXPECT_EQ(w.find("a"), nullptr);
  w.remove("not-there");
  TempDir dir;
  w.write(dir.file("k.gguf"));
  auto f = GgufFile::open(dir.file("k.gguf"));
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata()[0].first, "b");
}

}  // namespace
}  // namespace trit::engine
