// safetensors reader: round trips of every dtype, folders (single file, index + shards, plain
// *.safetensors), and a corpus of broken files that must each give a trit::Error naming the file
// and the field, never a crash.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/safetensors_builder.h"

namespace trit::engine {
namespace {

using test::bf16_bytes;
using test::error_of;
using test::f16_bytes;
using test::f32_bytes;
using test::raw_bytes;
using test::st_file;
using test::st_raw;
using test::StEntry;
using test::TempDir;
using test::write_file;

std::string open_error(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir.file(name);
  write_file(path, bytes);
  return error_of([&] { SafetensorsFile::open(path); });
}

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  const std::vector<float> f = {1.0f, -2.5f, 0.15625f, 3e-3f, -1e4f, 0.0f};
  const std::vector<double> f64 = {1.5, -2.25, 1e-8};
  const std::vector<int8_t> i8 = {-128, 0, 127, 5};
  const std::vector<uint8_t> u8 = {0, 255, 17, 2, 9, 1};
  const std::vector<int16_t> i16 = {-32768, 32767};
  const std::vector<int32_t> i32 = {-7, 1 << 30, 3};
  const std::vector<int64_t> i64 = {int64_t(1) << 40, -1};
  const std::vector<uint8_t> bools = {1, 0, 1};
  const std::string bytes = st_file({{"a.f32", "F32", {2, 3}, f32_bytes(f)},
                                     {"a.f16", "F16", {6}, f16_bytes(f)},
                                     {"a.bf16", "BF16", {3, 2}, bf16_bytes(f)},
                                     {"a.f64", "F64", {3}, raw_bytes(f64)},
                                     {"b.i8", "I8", {4}, raw_bytes(i8)},
                                     {"b.u8", "U8", {2, 3}, raw_bytes(u8)},
                                     {"b.i16", "I16", {2}, raw_bytes(i16)},
                                     {"b.i32", "I32", {3}, raw_bytes(i32)},
                                     {"b.i64", "I64", {2}, raw_bytes(i64)},
                                     {"b.bool", "BOOL", {3}, raw_bytes(bools)},
                                     {"scalar", "F32", {}, f32_bytes({42.0f})},
                                     {"empty", "F32", {0, 4}, ""}},
                                    {{"format", "pt"}, {"note", "x"}});
  write_file(dir.file("model.safetensors"), bytes);
  auto file = SafetensorsFile::open(dir.file("model.safetensors"));
  EXPECT_EQ(file->tensors().size(), 12u);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("note"), "x");

  const StTensor* t = file->find("a.f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::F32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->n_elements(), 6);
  EXPECT_EQ(t->nbytes, 24u);
  EXPECT_EQ(t->to_f32(file->path()), f);

  std::vector<float> h = file->find("a.f16")->to_f32(file->path());
  std::vector<float> b = file->find("a.bf16")->to_f32(file->path());
  for (size_t i = 0; i < f.size(); ++i) {
    EXPECT_NEAR(h[i], f[i], std::fabs(f[i]) * 1e-3 + 1e-7) << i;
    EXPECT_NEAR(b[i], f[i], std::fabs(f[i]) * 8e-3) << i;
  }
  std::vector<float> d = file->find("a.f64")->to_f32(file->path());
  for (size_t i = 0; i < f64.size(); ++i) EXPECT_FLOAT_EQ(d[i], float(f64[i]));

  EXPECT_EQ(file->find("b.i8")->dtype, StDType::I8);
  EXPECT_EQ(file->find("b.u8")->dtype, StDType::U8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->find("b.u8")->data), 6), raw_bytes(u8));
  EXPECT_EQ(file->find("b.i16")->nbytes, 4u);
  EXPECT_EQ(file->find("b.i32")->nbytes, 12u);
  EXPECT_EQ(file->find("b.i64")->nbytes, 16u);
  EXPECT_EQ(file->find("b.bool")->dtype, StDType::BOOL);
  EXPECT_EQ(file->find("scalar")->n_elements(), 1);
  EXPECT_EQ(file->find("scalar")->to_f32(file->path())[0], 42.0f);
  EXPECT_EQ(file->find("empty")->n_elements(), 0);
  EXPECT_EQ(file->find("missing"), nullptr);

  // Pieces of a tensor.
  float piece[2];
  file->find("a.bf16")->read_f32(2, 2, piece, file->path());
  EXPECT_EQ(piece[0], b[2]);
  EXPECT_EQ(piece[1], b[3]);
  std::string msg = error_of([&] { file->find("a.f32")->read_f32(5, 2, piece, file->path()); });
  EXPECT_CONTAINS(msg, "a.f32");

  // Integers are no floats: the error names file, tensor and dtype.
  msg = error_of([&] { file->find("b.i32")->to_f32(file->path()); });
  EXPECT_CONTAINS(msg, "model.safetensors");
  EXPECT_CONTAINS(msg, "b.i32");
  EXPECT_CONTAINS(msg, "I32");
}

TEST(Safetensors, DtypeNamesAndSizes) {
  EXPECT_STREQ(st_dtype_name(StDType::BF16), "BF16");
  EXPECT_EQ(st_dtype_size(StDType::F64), 8);
  EXPECT_EQ(st_dtype_size(StDType::U8), 1);
  EXPECT_EQ(st_dtype_size(StDType::I16), 2);
}

TEST(SafetensorsSet, IndexWithShards) {
  TempDir dir;
  write_file(dir.file("model-00001-of-00002.safetensors"),
             st_file({{"x.weight", "F32", {2}, f32_bytes({1, 2})},
                      {"y.weight", "F16", {1}, f16_bytes({3})}}));
  write_file(dir.file("model-00002-of-00002.safetensors"),
             st_file({{"z.weight", "BF16", {2, 1}, bf16_bytes({4, 5})}}));
  write_file(dir.file("model.safetensors.index.json"),
             R"({"metadata": {"total_size": 14}, "weight_map": {
                 "x.weight": "model-00001-of-00002.safetensors",
                 "y.weight": "model-00001-of-00002.safetensors",
                 "z.weight": "model-00002-of-00002.safetensors"}})");
  // A stray file that the index does not name is not read.
  write_file(dir.file("stray.safetensors"), "garbage");
  SafetensorsSet set = SafetensorsSet::open_folder(dir.path());
  EXPECT_EQ(set.names(), (std::vector<std::string>{"x.weight", "y.weight", "z.weight"}));
  EXPECT_EQ(set.get("z.weight").to_f32("z"), (std::vector<float>{4, 5}));
  EXPECT_EQ(set.get("y.weight").to_f32("y"), (std::vector<float>{3}));
  EXPECT_NE(set.file_of("z.weight").find("model-00002-of-00002.safetensors"), std::string::npos);
  EXPECT_EQ(set.find("nope"), nullptr);
  const std::string msg = error_of([&] { set.get("nope"); });
  EXPECT_CONTAINS(msg, dir.path());
  EXPECT_CONTAINS(msg, "nope");
}

TEST(SafetensorsSet, SingleFileAndGlob) {
  {
    TempDir dir;
    write_file(dir.file("model.safetensors"), st_file({{"a", "F32", {1}, f32_bytes({1})}}));
    write_file(dir.file("other.safetensors"), "not read: model.safetensors wins");
    SafetensorsSet set = SafetensorsSet::open_folder(dir.path());
    EXPECT_EQ(set.names(), (std::vector<std::string>{"a"}));
  }
  {
    TempDir dir;
    write_file(dir.file("b.safetensors"), st_file({{"b", "F32", {1}, f32_bytes({2})}}));
    write_file(dir.file("a.safetensors"), st_file({{"a", "F32", {1}, f32_bytes({1})}}));
    write_file(dir.file("readme.txt"), "x");
    SafetensorsSet set = SafetensorsSet::open_folder(dir.path());
    EXPECT_EQ(set.names(), (std::vector<std::string>{"a", "b"}));
    EXPECT_NE(set.file_of("b").find("b.safetensors"), std::string::npos);
  }
}

TEST(SafetensorsSet, FolderErrors) {
  {
    TempDir dir;
    write_file(dir.file("config.json"), "{}");
    const std::string msg = error_of([&] { SafetensorsSet::open_folder(dir.path()); });
    EXPECT_CONTAINS(msg, dir.path());
    EXPECT_CONTAINS(msg, "safetensors");
  }
  {  // the same name in two shards
    TempDir dir;
    write_file(dir.file("a.safetensors"), st_file({{"w", "F32", {1}, f32_bytes({1})}}));
    write_file(dir.file("b.safetensors"), st_file({{"w", "F32", {1}, f32_bytes({2})}}));
    const std::string msg = error_of([&] { SafetensorsSet::open_folder(dir.path()); });
    EXPECT_CONTAINS(msg, "tensor w");
    EXPECT_CONTAINS(msg, "a.safetensors");
    EXPECT_CONTAINS(msg, "b.safetensors");
  }
  {  // duplicates across shards named by an index
    TempDir dir;
    write_file(dir.file("s1.safetensors"), st_file({{"w", "F32", {1}, f32_bytes({1})}}));
    write_file(dir.file("s2.safetensors"), st_file({{"w", "F32", {1}, f32_bytes({2})}}));
    write_file(dir.file("model.safetensors.index.json"),
               R"({"weight_map": {"w": "s1.safetensors", "v": "s2.safetensors"}})");
    const std::string msg = error_of([&] { SafetensorsSet::open_folder(dir.path()); });
    EXPECT_CONTAINS(msg, "tensor w");
    EXPECT_CONTAINS(msg, "s2.safetensors");
  }
  {  // the index names a tensor its shard lacks
    TempDir dir;
    write_file(dir.file("s1.safetensors"), st_file({{"w", "F32", {1}, f32_bytes({1})}}));
    write_file(dir.file("model.safetensors.index.json"),
               R"({"weight_map": {"w": "s1.safetensors", "v": "s1.safetensors"}})");
    const std::string msg = error_of([&] { SafetensorsSet::open_folder(dir.path()); });
    EXPECT_CONTAINS(msg, "model.safetensors.index.json");
    EXPECT_CONTAINS(msg, "tensor v");
  }
  {  // the index names a shard that does not exist
    TempDir dir;
    write_file(dir.file("model.safetensors.index.json"),
               R"({"weight_map": {"w": "missing.safetensors"}})");
    const std::string msg = error_of([&] { SafetensorsSet::open_folder(dir.path()); });
    EXPECT_CONTAINS(msg, "missing.safetensors");
  }
  {  // the index points outside the folder
    TempDir dir;
    write_file(dir.file("model.safetensors.index.json"),
               R"({"weight_map": {"w": "../evil.safetensors"}})");
    const std::string msg = error_of([&] { SafetensorsSet::open_folder(dir.path()); });
    EXPECT_CONTAINS(msg, "../evil.safetensors");
  }
  {  // a broken index
    TempDir dir;
    write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": [1, 2]})");
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet::open_folder(dir.path()); }), "weight_map");
    write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": )");
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet::open_folder(dir.path()); }),
                    "model.safetensors.index.json");
  }
  EXPECT_CONTAINS(error_of([] { SafetensorsSet::open_folder("/nonexistent/trit/dir"); }),
                  "/nonexistent/trit/dir");
}

// A small well-formed file used by the corruption tests.
std::string good_file() {
  std::vector<float> w(12);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i) * 0.5f - 2.0f;
  return st_file({{"model.norm.weight", "F32", {12}, f32_bytes(w)},
                  {"model.embed_tokens.weight", "BF16", {3, 4}, bf16_bytes(w)}},
                 {{"format", "pt"}});
}

TEST(SafetensorsBad, TruncatedAtEveryCut) {
  TempDir dir;
  const std::string good = good_file();
  write_file(dir.file("good.safetensors"), good);
  ASSERT_NO_THROW(SafetensorsFile::open(dir.file("good.safetensors")));
  for (size_t cut = 0; cut < good.size(); ++cut) {
    const std::string msg = open_error(dir, "cut.safetensors", good.substr(0, cut));
    EXPECT_CONTAINS(msg, "cut.safetensors") << " cut at " << cut;
  }
}

TEST(SafetensorsBad, HeaderLength) {
  TempDir dir;
  std::string msg = open_error(dir, "huge.safetensors", test::st_u64(uint64_t(1) << 63) + "{}");
  EXPECT_CONTAINS(msg, "huge.safetensors");
  EXPECT_CONTAINS(msg, "header length");
  msg = open_error(dir, "cap.safetensors", test::st_u64(uint64_t(200) << 20) + "{}");
  EXPECT_CONTAINS(msg, "header length");
  msg = open_error(dir, "over.safetensors", test::st_u64(3) + "{}");
  EXPECT_CONTAINS(msg, "header length 3");
  msg = open_error(dir, "short.safetensors", "abc");
  EXPECT_CONTAINS(msg, "short.safetensors");
  msg = open_error(dir, "zero.safetensors", "");
  EXPECT_CONTAINS(msg, "zero.safetensors");
}

TEST(SafetensorsBad, HeaderNotJson) {
  TempDir dir;
  std::string msg = open_error(dir, "nj.safetensors", st_raw("{not json", ""));
  EXPECT_CONTAINS(msg, "nj.safetensors");
  EXPECT_CONTAINS(msg, "JSON");
  msg = open_error(dir, "arr.safetensors", st_raw("[1, 2, 3]", ""));
  EXPECT_CONTAINS(msg, "JSON object");
  msg = open_error(dir, "bin.safetensors", st_raw(std::string("{\"a\0\xff", 5), ""));
  EXPECT_CONTAINS(msg, "bin.safetensors");
}

struct BadCase {
  const char* label;
  std::string header;
  std::string data;
  std::vector<const char*> parts;  // each must appear in the message
};

TEST(SafetensorsBad, EntryCorpus) {
  TempDir dir;
  const std::string d16(16, '\0');
  const std::vector<BadCase> cases = {
      {"offsets beyond data",
       R"({"model.norm.weight": {"dtype": "F32", "shape": [500], "data_offsets": [10, 2010]}})",
       std::string(1500, '\0'),
       {"tensor model.norm.weight", "data_offsets [10, 2010) exceed the 1500 bytes of data"}},
      {"offsets reversed",
       R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})",
       d16,
       {"tensor w", "data_offsets"}},
      {"size mismatch",
       R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
       d16,
       {"tensor w", "data_offsets [0, 8)", "12"}},
      {"size mismatch bf16",
       R"({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})",
       d16,
       {"tensor w", "needs 8"}},
      {"unknown dtype",
       R"({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})",
       d16,
       {"tensor w", "dtype", "F8_E4M3"}},
      {"dtype not a string",
       R"({"w": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}})",
       d16,
       {"tensor w", "dtype"}},
      {"negative shape",
       R"({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})",
       d16,
       {"tensor w", "shape", "negative"}},
      {"shape overflow",
       R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}})",
       d16,
       {"tensor w", "shape"}},
      {"shape overflow bytes",
       R"({"w": {"dtype": "F64", "shape": [2305843009213693952, 2], "data_offsets": [0, 16]}})",
       d16,
       {"tensor w", "shape"}},
      {"shape huge",
       R"({"w": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 16]}})",
       d16,
       {"tensor w", "shape"}},
      {"shape float",
       R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})",
       d16,
       {"tensor w", "shape"}},
      {"shape string",
       R"({"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}})",
       d16,
       {"tensor w", "shape"}},
      {"missing dtype",
       R"({"w": {"shape": [1], "data_offsets": [0, 4]}})",
       d16,
       {"tensor w", "dtype"}},
      {"missing shape",
       R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})",
       d16,
       {"tensor w", "shape"}},
      {"missing offsets",
       R"({"w": {"dtype": "F32", "shape": [1]}})",
       d16,
       {"tensor w", "data_offsets"}},
      {"offsets arity",
       R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})",
       d16,
       {"tensor w", "data_offsets"}},
      {"offsets negative",
       R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})",
       d16,
       {"tensor w", "data_offsets"}},
      {"offsets huge",
       R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551612, )"
       R"(18446744073709551615]}})",
       d16,
       {"tensor w", "data_offsets"}},
      {"entry not object", R"({"w": [1, 2]})", d16, {"tensor w"}},
      {"metadata not object", R"({"__metadata__": "x"})", d16, {"__metadata__"}},
      {"metadata value", R"({"__metadata__": {"format": 1}})", d16, {"__metadata__", "format"}},
  };
  for (const BadCase& c : cases) {
    const std::string msg = open_error(dir, "bad.safetensors", st_raw(c.header, c.data));
    EXPECT_CONTAINS(msg, "bad.safetensors") << " case: " << c.label;
    for (const char* part : c.parts) EXPECT_CONTAINS(msg, part) << " case: " << c.label;
  }
}

// Random corruption of a good file: every result is either a clean open or a trit::Error.
TEST(SafetensorsBad, RandomCorruption) {
  TempDir dir;
  const std::string good = good_file();
  std::mt19937 rng(7);
  for (int iter = 0; iter < 400; ++iter) {
    std::string bytes = good;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly inside the length field and the header, where the structure lives.
      const size_t limit = std::min<size_t>(bytes.size(), 8 + 200);
      bytes[rng() % limit] = char(rng() & 0xff);
    }
    const std::string path = dir.file("rand.safetensors");
    write_file(path, bytes);
    try {
      auto f = SafetensorsFile::open(path);
      for (const auto& [name, t] : f->tensors()) {
        // Whatever opened must be readable within the file.
        if (t.nbytes > 0) {
          volatile uint8_t sink = t.data[0] ^ t.data[t.nbytes - 1];
          (void)sink;
        }
      }
    } catch (const Error& e) {
      EXPECT_CONTAINS(e.what(), "rand.safetensors");
    }
  }
}

}  // namespace
}  // namespace trit::engine
