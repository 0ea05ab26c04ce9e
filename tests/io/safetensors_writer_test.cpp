// The safetensors writer (io/safetensors_writer.h): the bytes of Python's layout, read back.
#include "io/safetensors_writer.h"

#include <gtest/gtest.h>

#include <vector>

#include "io/safetensors.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/safetensors_builder.h"

namespace trit::engine {
namespace {

using test::error_of;
using test::TempDir;

TEST(SafetensorsWriter, MatchesTheFormatAndReadsBack) {
  TempDir dir;
  const std::vector<float> x = {1.0f, -2.5f, 0.125f, 3.0f, 65504.0f, -0.0f};
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.add_f32("x", {2, 3}, x.data());
  w.add_f32("h", {6}, x.data(), StDType::F16);
  w.add_f32("b", {3, 2}, x.data(), StDType::BF16);
  const std::string path = dir.file("t.safetensors");
  w.write(path);
  EXPECT_FALSE(test::file_exists(path + ".tmp"));

  // The same bytes as the tests' own byte-by-byte builder (Python's layout).
  const std::string expect = test::st_file({{"x", "F32", {2, 3}, test::f32_bytes(x)},
                                            {"h", "F16", {6}, test::f16_bytes(x)},
                                            {"b", "BF16", {3, 2}, test::bf16_bytes(x)}},
                                           {{"format", "pt"}});
  const std::string got = test::read_file(path);
  EXPECT_EQ(got, expect);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(got[size_t(i)]);
  EXPECT_EQ(hlen % 8, 0u);
  EXPECT_EQ(got[8], '{');
  EXPECT_EQ(got.size(), 8 + hlen + 6 * 4 + 6 * 2 + 6 * 2);

  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->find("x")->to_f32(path), x);
  EXPECT_EQ(f->find("h")->dtype, StDType::F16);
  EXPECT_EQ(f->find("h")->to_f32(path), x);  // all exact in f16
  EXPECT_EQ(f->find("b")->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(f->find("b")->to_f32(path)[2], 0.125f);

  EXPECT_CONTAINS(error_of([&] { w.add_f32("x", {1}, x.data()); }), "duplicate");
  EXPECT_CONTAINS(error_of([&] { w.add_f32("__metadata__", {1}, x.data()); }), "__metadata__");
  EXPECT_CONTAINS(error_of([&] { w.add("y", StDType::F32, {2}, x.data(), 4); }), "needs 8");
  EXPECT_CONTAINS(error_of([&] { w.write(dir.file("no/such/dir/t.safetensors")); }),
                  "no/such/dir/t.safetensors");
}

}  // namespace
}  // namespace trit::engine
