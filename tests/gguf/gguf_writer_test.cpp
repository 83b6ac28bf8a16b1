// GgufWriter -> GgufFile round trips (the Python tests check the writer against the gguf package).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"

namespace chimera {
namespace {

// The returned file points into `bytes`, which must outlive it.
std::unique_ptr<GgufFile> parse_ok(const std::vector<uint8_t>& bytes) {
  auto f = GgufFile::from_buffer(bytes.data(), bytes.size(), "test.gguf");
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? std::move(f).value() : nullptr;
}

std::string temp_dir() {
  char tmpl[] = "/tmp/chimera_gguf_test_XXXXXX";
  const char* d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d ? d : "/tmp";
}

TEST(GgufWriter, EveryScalarTypeRoundTrips) {
  GgufWriter w;
  w.set_uint8("u8", 200);
  w.set_int8("i8", -100);
  w.set_uint16("u16", 60000);
  w.set_int16("i16", -30000);
  w.set_uint32("u32", 4000000000u);
  w.set_int32("i32", -2000000000);
  w.set_uint64("u64", std::numeric_limits<uint64_t>::max());
  w.set_int64("i64", std::numeric_limits<int64_t>::min());
  w.set_float32("f32", 0.1f);
  w.set_float64("f64", 0.1);
  w.set_bool("yes", true);
  w.set_bool("no", false);
  w.set_string("s", "héllo");
  w.set_string("empty", "");
  auto bytes = w.to_bytes();
  auto f = parse_ok(bytes);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->version(), 3u);
  ASSERT_EQ(f->kvs().size(), 14u);
  EXPECT_EQ(f->kvs()[0].key, "u8");  // insertion order kept
  EXPECT_EQ(f->find("u8")->value.type, GgufValueType::UINT8);
  EXPECT_EQ(*f->get<uint8_t>("u8"), 200);
  EXPECT_EQ(*f->get<int8_t>("i8"), -100);
  EXPECT_EQ(*f->get<uint16_t>("u16"), 60000);
  EXPECT_EQ(*f->get<int16_t>("i16"), -30000);
  EXPECT_EQ(*f->get<uint32_t>("u32"), 4000000000u);
  EXPECT_EQ(*f->get<int32_t>("i32"), -2000000000);
  EXPECT_EQ(*f->get<uint64_t>("u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_FALSE(f->get<int64_t>("u64").ok());  // does not fit
  EXPECT_EQ(*f->get<int64_t>("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_FALSE(f->get<uint64_t>("i64").ok());  // negative
  EXPECT_FALSE(f->get<int32_t>("i64").ok());
  EXPECT_EQ(*f->get<float>("f32"), 0.1f);
  EXPECT_EQ(*f->get<double>("f64"), 0.1);
  EXPECT_EQ(f->find("f32")->value.type, GgufValueType::FLOAT32);
  EXPECT_EQ(*f->get<bool>("yes"), true);
  EXPECT_EQ(*f->get<bool>("no"), false);
  EXPECT_EQ(*f->get<int32_t>("yes"), 1);  // BOOL accepted for integers
  EXPECT_EQ(*f->get<std::string>("s"), "héllo");
  EXPECT_EQ(*f->get<std::string_view>("empty"), "");
  EXPECT_FALSE(f->get<float>("u8").ok());
  EXPECT_FALSE(f->get<std::string>("u8").ok());
  EXPECT_FALSE(f->get<bool>("u16").ok());  // 60000 is not a truth value
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufWriter, ArraysRoundTrip) {
  GgufWriter w;
  w.set_array<int32_t>("i32s", {0, -1, 7, std::numeric_limits<int32_t>::min()});
  w.set_array<uint8_t>("u8s", {1, 2, 255});
  w.set_array<float>("f32s", {1.5f, -0.25f});
  w.set_array<double>("f64s", {1e300});
  w.set_array<bool>("bools", {true, false, true});
  w.set_array<uint64_t>("empty", {});
  w.set_string_array("strs", {"a", "", "Ġthe", std::string("nul\0in", 6)});
  const auto bytes = w.to_bytes();  // the parsed file views these bytes: keep them alive
  auto f = parse_ok(bytes);
  ASSERT_NE(f, nullptr);
  const GgufValue& v = f->find("i32s")->value;
  EXPECT_EQ(v.type, GgufValueType::ARRAY);
  EXPECT_EQ(v.elem_type, GgufValueType::INT32);
  EXPECT_EQ(v.count, 4u);
  EXPECT_EQ(*f->get_array<int64_t>("i32s"),
            (std::vector<int64_t>{0, -1, 7, std::numeric_limits<int32_t>::min()}));
  EXPECT_FALSE(f->get_array<uint32_t>("i32s").ok());  // -1 does not fit
  EXPECT_EQ(*f->get_array<uint32_t>("u8s"), (std::vector<uint32_t>{1, 2, 255}));
  EXPECT_EQ(*f->get_array<float>("f32s"), (std::vector<float>{1.5f, -0.25f}));
  EXPECT_EQ(*f->get_array<double>("f64s"), (std::vector<double>{1e300}));
  EXPECT_EQ(*f->get_array<bool>("bools"), (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(f->get_array<uint64_t>("empty")->empty());
  auto strs = f->get_string_array("strs");
  ASSERT_TRUE(strs.ok());
  ASSERT_EQ(strs->size(), 4u);
  EXPECT_EQ((*strs)[2], "Ġthe");
  EXPECT_EQ((*strs)[3], std::string_view("nul\0in", 6));
  EXPECT_FALSE(f->get_string_array("i32s").ok());
  EXPECT_FALSE(f->get_array<int32_t>("strs").ok());
  EXPECT_EQ(gguf_array_element(v, 1).i, -1);
}

TEST(GgufWriter, ReplacingAKeyKeepsItsPlace) {
  GgufWriter w;
  w.set_uint32("a", 1);
  w.set_string("b", "x");
  w.set_array<int32_t>("a", {1, 2});
  EXPECT_TRUE(w.has_key("a"));
  const auto bytes = w.to_bytes();  // the parsed file views these bytes: keep them alive
  auto f = parse_ok(bytes);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->kvs().size(), 2u);
  EXPECT_EQ(f->kvs()[0].key, "a");
  EXPECT_EQ(f->kvs()[0].value.type, GgufValueType::ARRAY);
  EXPECT_TRUE(w.remove_key("a"));
  EXPECT_FALSE(w.remove_key("a"));
  EXPECT_EQ(w.kv_count(), 1u);
}

TEST(GgufWriter, TensorsAndCustomAlignmentRoundTrip) {
  for (uint32_t align : {1u, 8u, 32u, 64u, 4096u}) {
    GgufWriter w;
    ASSERT_TRUE(w.set_alignment(align).ok());
    std::vector<float> a(7);
    for (int i = 0; i < 7; ++i) a[i] = 0.5f * i;
    std::vector<uint8_t> q8(2 * 34);
    for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i * 13);
    std::vector<uint8_t> q6(210 * 3);
    for (size_t i = 0; i < q6.size(); ++i) q6[i] = static_cast<uint8_t>(i ^ 0x5a);
    ASSERT_TRUE(w.add_tensor("a", GgmlType::F32, {7}, a.data(), 28).ok());
    ASSERT_TRUE(w.add_tensor("q8", GgmlType::Q8_0, {32, 2}, q8.data(), q8.size()).ok());
    ASSERT_TRUE(w.add_tensor_view("q6", GgmlType::Q6_K, {256, 1, 3, 1}, q6.data(), q6.size()).ok());
    auto bytes = w.to_bytes();
    auto f = parse_ok(bytes);
    ASSERT_NE(f, nullptr) << "alignment " << align;
    EXPECT_EQ(f->alignment(), align);
    EXPECT_EQ(f->data_offset() % align, 0u);
    ASSERT_EQ(f->tensors().size(), 3u);
    const GgufTensorInfo& ta = f->tensors()[0];
    EXPECT_EQ(ta.n_dims, 1u);
    EXPECT_EQ(ta.shape_string(), "{7}");
    EXPECT_EQ(std::memcmp(ta.data, a.data(), 28), 0);
    const GgufTensorInfo& t8 = f->tensors()[1];
    EXPECT_EQ(t8.type, GgmlType::Q8_0);
    EXPECT_EQ(t8.offset % align, 0u);
    EXPECT_EQ(std::memcmp(t8.data, q8.data(), q8.size()), 0);
    const GgufTensorInfo& t6 = f->tensors()[2];
    EXPECT_EQ(t6.n_dims, 4u);
    EXPECT_EQ(t6.shape_string(), "{256, 1, 3, 1}");
    EXPECT_EQ(t6.n_elements(), 768u);
    EXPECT_EQ(t6.row_bytes(), 210u);
    EXPECT_EQ(std::memcmp(t6.data, q6.data(), q6.size()), 0);
    // The file ends with the last tensor padded to the alignment, like the gguf package writes.
    EXPECT_EQ(bytes.size(), f->data_offset() + t6.offset + (q6.size() + align - 1) / align * align);
  }
}

TEST(GgufWriter, RejectsBadTensorsAndAlignment) {
  GgufWriter w;
  float x[4] = {};
  EXPECT_FALSE(w.set_alignment(0).ok());
  EXPECT_FALSE(w.set_alignment(48).ok());
  EXPECT_FALSE(w.has_key("general.alignment"));
  EXPECT_FALSE(w.add_tensor("t", GgmlType::F32, {4}, x, 12).ok());  // wrong byte count
  EXPECT_FALSE(w.add_tensor("t", GgmlType::F32, {}, x, 4).ok());
  EXPECT_FALSE(w.add_tensor("t", GgmlType::F32, {1, 1, 1, 1, 4}, x, 16).ok());
  EXPECT_FALSE(w.add_tensor("t", GgmlType::Q8_0, {4}, x, 4).ok());  // not a block multiple
  EXPECT_FALSE(w.add_tensor("t", GgmlType::F32, {-4}, x, 16).ok());
  EXPECT_FALSE(w.add_tensor("", GgmlType::F32, {4}, x, 16).ok());
  EXPECT_FALSE(w.add_tensor(std::string(64, 'n'), GgmlType::F32, {4}, x, 16).ok());
  EXPECT_TRUE(w.add_tensor(std::string(63, 'n'), GgmlType::F32, {4}, x, 16).ok());
  EXPECT_TRUE(w.add_tensor("t", GgmlType::F32, {4}, x, 16).ok());
  EXPECT_FALSE(w.add_tensor("t", GgmlType::F32, {4}, x, 16).ok());  // duplicate
  EXPECT_EQ(w.tensor_count(), 2u);
  EXPECT_FALSE(w.set_raw_array("r", GgufValueType::STRING, x, 1).ok());
}

TEST(GgufWriter, WritesFilesAtomically) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/out.gguf";
  {
    std::ofstream old(path);
    old << "old content";
  }
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  std::vector<uint16_t> h(64, 0x3c00);  // fp16 1.0
  ASSERT_TRUE(w.add_tensor("h", GgmlType::F16, {64}, h.data(), 128).ok());
  ASSERT_TRUE(w.write_file(path).ok());
  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->architecture(), "llama");
  EXPECT_EQ((*f)->file_size(), w.to_bytes().size());
  EXPECT_EQ(fp16_to_f32(reinterpret_cast<const uint16_t*>((*f)->tensors()[0].data)[5]), 1.0f);

  // A directory that does not exist: an I/O error, nothing left behind.
  Status st = w.write_file(dir + "/missing/out.gguf");
  EXPECT_EQ(st.code(), ErrorCode::kIo);
  EXPECT_NE(st.message().find("missing/out.gguf"), std::string::npos);
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

// GgufLoad: a file read into memory (huge pages for big files) and the same file mapped parse to
// the same keys and the same tensor bytes, at the file's alignment; so does kAuto, whichever it
// picks. ~6 MiB of tensor data takes the huge-page path of the copy.
TEST(GgufWriter, CopiedAndMappedFilesHoldTheSameBytes) {
  std::vector<float> big((6 * 1024 * 1024 - 65536) / 4 + 7), small(33);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.25f - 3.0f;
  for (size_t i = 0; i < small.size(); ++i) small[i] = -static_cast<float>(i);
  GgufWriter w;
  w.set_string("general.architecture", "test");
  w.set_uint32("answer", 42);
  ASSERT_TRUE(
      w.add_tensor("big", GgmlType::F32, {int64_t(big.size())}, big.data(), big.size() * 4).ok());
  ASSERT_TRUE(
      w.add_tensor("small", GgmlType::F32, {int64_t(small.size())}, small.data(), small.size() * 4)
          .ok());
  const std::string dir = temp_dir(), path = dir + "/big.gguf";
  ASSERT_TRUE(w.write_file(path).ok());
  auto mapped = GgufFile::open(path, GgufLoad::kMap);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  for (GgufLoad how : {GgufLoad::kCopy, GgufLoad::kAuto}) {
    auto f = GgufFile::open(path, how);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_EQ((*f)->file_size(), (*mapped)->file_size());
    EXPECT_EQ(*(*f)->get<uint32_t>("answer"), 42u);
    ASSERT_EQ((*f)->tensors().size(), 2u);
    for (size_t t = 0; t < 2; ++t) {
      const GgufTensorInfo& a = (*f)->tensors()[t];
      const GgufTensorInfo& b = (*mapped)->tensors()[t];
      ASSERT_EQ(a.nbytes, b.nbytes);
      EXPECT_NE(a.data, b.data);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % (*f)->alignment(), 0u) << a.name;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
    }
    EXPECT_EQ(std::memcmp((*f)->tensors()[0].data, big.data(), big.size() * 4), 0);
    if (how == GgufLoad::kCopy) {  // the file's first byte starts a huge page
      const GgufTensorInfo& t = (*f)->tensors()[0];
      const uint8_t* base = t.data - (*f)->data_offset() - t.offset;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % LargeBuffer::kHugePage, 0u);
    }
  }
  auto missing = GgufFile::open(path + ".nope", GgufLoad::kCopy);
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace chimera
