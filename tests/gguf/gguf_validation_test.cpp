// Malformed GGUF files, built byte by byte: each must give a kFormat/kUnsupported Status naming
// the field and the byte offset, never a crash (the fuzz target covers what these miss).
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"

namespace chimera {
namespace {

// Little-endian byte builder that remembers where things were written.
struct Raw {
  std::vector<uint8_t> b;
  template <typename T>
  Raw& put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return *this;
  }
  Raw& u32(uint32_t v) { return put(v); }
  Raw& u64(uint64_t v) { return put(v); }
  Raw& i64(int64_t v) { return put(v); }
  Raw& str(std::string_view s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    u32(version);
    return u64(n_tensors).u64(n_kv);
  }
  Raw& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
  Raw& tensor(std::string_view name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (int64_t d : ne) i64(d);
    return u32(type).u64(offset);
  }
  Raw& pad(size_t align) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
  Raw& zeros(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
  size_t size() const { return b.size(); }
};

Result<std::unique_ptr<GgufFile>> parse(const Raw& r) {
  return GgufFile::from_buffer(r.b.data(), r.b.size(), "bad.gguf");
}

// Parsing must fail with `code`, and the message must contain every one of `parts`.
void expect_error(const Raw& r, std::initializer_list<std::string> parts,
                  ErrorCode code = ErrorCode::kFormat) {
  auto f = parse(r);
  ASSERT_FALSE(f.ok()) << "parsed a malformed file";
  EXPECT_EQ(f.status().code(), code) << f.status().ToString();
  for (const std::string& p : parts)
    EXPECT_NE(f.status().message().find(p), std::string::npos)
        << "message '" << f.status().message() << "' lacks '" << p << "'";
  EXPECT_NE(f.status().message().find("bad.gguf"), std::string::npos);
}

std::string at(size_t off) {
  return "at byte " + std::to_string(off) + ")";
}

TEST(GgufValidation, MinimalFilesParse) {
  Raw r;
  r.header(0, 0);
  ASSERT_TRUE(parse(r).ok());
  Raw v2;  // version 2 has the same 64-bit counts as version 3
  v2.header(1, 1, 2).kv_u32("k", 5).tensor("t", {4}, 0, 0).pad(32).zeros(16);
  auto f = parse(v2);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->tensors()[0].nbytes, 16u);
}

TEST(GgufValidation, BadMagicAndVersion) {
  Raw r;
  r.b = {'G', 'G', 'M', 'L', 3, 0, 0, 0};
  r.zeros(16);
  expect_error(r, {"not a GGUF file", at(0)});
  for (uint32_t version : {1u, 4u, 0xffffffffu}) {
    Raw v;
    v.header(0, 0, version);
    expect_error(v, {"version " + std::to_string(version), "only 2 and 3", at(4)},
                 ErrorCode::kUnsupported);
  }
  Raw tiny;
  tiny.b = {'G', 'G'};
  expect_error(tiny, {"not a GGUF file"});
  Raw empty;
  expect_error(empty, {"not a GGUF file"});
}

TEST(GgufValidation, EveryTruncationOfAValidFileFails) {
  GgufWriter w;
  w.set_string("general.architecture", "granitehybrid");
  w.set_array<int32_t>("granitehybrid.attention.head_count_kv", {0, 8, 0});
  w.set_string_array("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  w.set_float64("f", 2.5);
  std::vector<uint8_t> data(34 * 2, 7);
  ASSERT_TRUE(w.add_tensor("q", GgmlType::Q8_0, {64}, data.data(), data.size()).ok());
  ASSERT_TRUE(w.add_tensor("f", GgmlType::F32, {3}, data.data(), 12).ok());
  const std::vector<uint8_t> full = w.to_bytes();
  auto ok = GgufFile::from_buffer(full.data(), full.size());
  ASSERT_TRUE(ok.ok());
  const GgufTensorInfo& last = (*ok)->tensors().back();
  const size_t data_end = (*ok)->data_offset() + last.offset + last.nbytes;
  for (size_t n = 0; n < data_end; ++n) {
    auto f = GgufFile::from_buffer(full.data(), n, "cut.gguf");
    ASSERT_FALSE(f.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(f.status().code(), ErrorCode::kFormat) << n;
    const std::string& m = f.status().message();
    EXPECT_TRUE(m.find("truncated") != std::string::npos ||
                m.find("not a GGUF file") != std::string::npos ||
                m.find("exceeds") != std::string::npos || m.find("cannot") != std::string::npos ||
                m.find("absurd") != std::string::npos)
        << n << ": " << m;
  }
  // The last tensor's trailing padding is optional (llama.cpp does not require it either).
  EXPECT_TRUE(GgufFile::from_buffer(full.data(), data_end).ok());
}

TEST(GgufValidation, AbsurdCounts) {
  Raw kv;
  kv.header(0, uint64_t(1) << 60).zeros(64);
  expect_error(kv, {"absurd metadata count", at(16)});
  Raw neg;
  neg.header(0, uint64_t(-1)).zeros(64);
  expect_error(neg, {"absurd metadata count -1", at(16)});
  Raw t;
  t.header(uint64_t(1) << 40, 0).zeros(64);
  expect_error(t, {"absurd tensor count", at(8)});
}

TEST(GgufValidation, BadKeys) {
  Raw len;
  len.header(0, 1).u64(uint64_t(1) << 62).zeros(32);
  expect_error(len, {"key of metadata record #0 length", "exceeds", at(24)});
  Raw empty;
  empty.header(0, 1).str("").u32(4).u32(0);
  expect_error(empty, {"empty key", at(24)});
  Raw dup;
  dup.header(0, 3).kv_u32("a", 1).kv_u32("b", 2);
  const size_t third = dup.size();
  dup.kv_u32("a", 3);
  expect_error(dup, {"duplicate metadata key 'a'", at(third)});
}

TEST(GgufValidation, BadValues) {
  Raw type;
  type.header(0, 1).str("k").u32(13).u32(0);
  expect_error(type, {"metadata 'k'", "unknown value type id 13", at(33)});
  Raw nested;
  nested.header(0, 1).str("k").u32(9).u32(9).u64(0);
  expect_error(nested, {"metadata 'k'", "nested arrays", at(37)});
  Raw elem;
  elem.header(0, 1).str("k").u32(9).u32(42).u64(0);
  expect_error(elem, {"unknown value type id 42", at(37)});
  Raw count;
  count.header(0, 1).str("k").u32(9).u32(5).u64(uint64_t(1) << 62).zeros(16);
  expect_error(count, {"metadata 'k'", "array of 4611686018427387904 INT32", at(41)});
  Raw strs;
  strs.header(0, 1).str("k").u32(9).u32(8).u64(1000).str("x");
  expect_error(strs, {"array of 1000 strings", at(41)});
  Raw str_len;
  str_len.header(0, 1).str("k").u32(9).u32(8).u64(2).str("x").u64(99).zeros(4);
  expect_error(str_len, {"metadata 'k' element 1 length 99 exceeds", at(58)});
  Raw scalar;
  scalar.header(0, 1).str("k").u32(12).u32(0);  // FLOAT64 needs 8 bytes, 4 left
  expect_error(scalar, {"truncated file", "metadata 'k'", at(37)});
}

TEST(GgufValidation, BadAlignment) {
  for (uint32_t a : {0u, 3u, 48u}) {
    Raw r;
    r.header(0, 1).kv_u32("general.alignment", a);
    expect_error(r, {"general.alignment " + std::to_string(a) + " is not a power of two", at(24)});
  }
  Raw s;
  s.header(0, 1).str("general.alignment").u32(8).str("32");
  expect_error(s, {"general.alignment has type STRING", at(24)});
  Raw ok;  // any integer width is fine
  ok.header(1, 1).str("general.alignment").u32(0).put<uint8_t>(64).tensor("t", {1}, 0, 0);
  ok.pad(64).zeros(4);
  auto f = parse(ok);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->data_offset(), 128u);  // 87 bytes of header and info, padded to 64
}

TEST(GgufValidation, BadTensorInfos) {
  {
    Raw r;
    r.header(1, 0).str("t").u32(5).zeros(64);
    expect_error(r, {"tensor 't' has n_dims 5 (at most 4)", at(33)});
  }
  {
    Raw r;
    r.header(1, 0).tensor("t", {4, -2}, 0, 0).zeros(32);
    expect_error(r, {"tensor 't' ne[1] = -2 is negative", at(45)});
  }
  {
    Raw r;
    r.header(1, 0).tensor("t", {4}, 4, 0).zeros(32);  // id 4 is unused by ggml
    expect_error(r, {"tensor 't' has unknown ggml type id 4", at(45)});
  }
  {
    Raw r;
    r.header(1, 0).tensor("t", {4}, 1000, 0).zeros(32);
    expect_error(r, {"unknown ggml type id 1000"});
  }
  {
    Raw r;
    r.header(1, 0).tensor("t", {48}, 8, 0).zeros(64);  // Q8_0 blocks are 32
    expect_error(r, {"ne[0] = 48 is not a multiple of the Q8_0 block size 32", at(33)});
  }
  {
    Raw r;
    r.header(1, 0).tensor("t", {int64_t(1) << 62, 8}, 0, 0).zeros(32);
    expect_error(r, {"more elements than fit in 64 bits", at(33)});
  }
  {
    Raw r;
    r.header(1, 0).tensor("t", {int64_t(1) << 61}, 0, 0).zeros(32);  // bytes = 2^63
    expect_error(r, {"truncated file: tensor 't' data"});
  }
  {
    Raw r;
    r.header(2, 0).tensor("t", {4}, 0, 0);
    const size_t second = r.size();
    r.tensor("t", {4}, 0, 32).pad(32).zeros(64);
    expect_error(r, {"duplicate tensor name 't'", at(second)});
  }
  {
    Raw r;
    r.header(1, 0).tensor(std::string(64, 'x'), {4}, 0, 0).zeros(32);
    expect_error(r, {"name is 64 bytes long (at most 63", at(24)});
  }
  {
    Raw r;
    r.header(1, 0).tensor("", {4}, 0, 0).zeros(32);
    expect_error(r, {"tensor #0 has an empty name", at(24)});
  }
}

TEST(GgufValidation, TensorDataMustBeContiguousInInfoOrder) {
  // Two F32 tensors of 4 elements (16 bytes): the second must start at pad(16, 32) = 32.
  auto build = [](uint64_t off0, uint64_t off1, size_t data_bytes) {
    Raw r;
    r.header(2, 0).tensor("a", {4}, 0, off0).tensor("b", {4}, 0, off1).pad(32).zeros(data_bytes);
    return r;
  };
  ASSERT_TRUE(parse(build(0, 32, 48)).ok());
  // offset field of "b": header 24 + record a (8+1+4+8+4+8 = 33) + 8+1+4+8+4 = 82
  expect_error(build(0, 64, 96), {"tensor 'b' data offset 64 but expected 32", "(gap)", at(82)});
  expect_error(build(0, 16, 48), {"tensor 'b' data offset 16 but expected 32", "overlaps", at(82)});
  expect_error(build(0, 0, 48), {"tensor 'b' data offset 0", "overlaps"});
  expect_error(build(32, 64, 96), {"tensor 'a' data offset 32 but expected 0", at(49)});
  expect_error(build(0, 32, 40), {"truncated file: tensor 'b' data", "ends past the file size"});
}

TEST(GgufValidation, KnownButUnsupportedTypesAreReadable) {
  // Q2_K (id 10): chimera cannot compute with it, but reading is the consumers' decision.
  Raw r;
  r.header(1, 0).tensor("q2", {256, 2}, 10, 0).pad(32).zeros(2 * 84);
  auto f = parse(r);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufTensorInfo& t = (*f)->tensors()[0];
  EXPECT_EQ(t.type, GgmlType::Q2_K);
  EXPECT_EQ(t.nbytes, 168u);
  EXPECT_FALSE(type_traits(t.type).supported);
}

TEST(GgufValidation, OpenReportsMissingAndNonGgufFiles) {
  auto missing = GgufFile::open("/nonexistent/dir/model.gguf");
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/model.gguf"), std::string::npos);
  auto dir = GgufFile::open("/tmp");
  EXPECT_EQ(dir.status().code(), ErrorCode::kIo);
  auto text = GgufFile::open(std::string(CHIMERA_SOURCE_DIR) + "/CMakeLists.txt");
  EXPECT_EQ(text.status().code(), ErrorCode::kFormat);
  EXPECT_NE(text.status().message().find("not a GGUF file"), std::string::npos);
}

}  // namespace
}  // namespace chimera
