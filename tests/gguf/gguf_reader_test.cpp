// Reads the committed fixture written by the `gguf` Python package (python/make_gguf_fixtures.py).
// Expected values below are the ones that script passed to gguf.GGUFWriter.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "gguf/gguf_file.h"

namespace chimera {
namespace {

std::string fixture_path() {
  return std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/gguf/tiny_granitehybrid.gguf";
}

TEST(GgufReader, OpensFixtureAndReadsHyperParameters) {
  auto f = GgufFile::open(fixture_path());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.architecture(), "granitehybrid");
  EXPECT_EQ(g.data_offset() % 32, 0u);

  auto n_layers = g.get<uint32_t>("granitehybrid.block_count");
  ASSERT_TRUE(n_layers.ok()) << n_layers.status().ToString();
  EXPECT_EQ(*n_layers, 4u);
  // Any integer width is accepted as long as the value fits.
  EXPECT_EQ(*g.get<uint64_t>("granitehybrid.embedding_length"), 256u);
  EXPECT_EQ(*g.get<int16_t>("granitehybrid.embedding_length"), 256);
  EXPECT_FALSE(g.get<uint8_t>("granitehybrid.embedding_length").ok());  // 256 > 255
  EXPECT_FLOAT_EQ(*g.get<float>("granitehybrid.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(*g.get<bool>("granitehybrid.rope.scaling.finetuned"), false);
  EXPECT_EQ(*g.get<std::string>("tokenizer.ggml.model"), "gpt2");

  auto kv = g.get_per_layer("granitehybrid.attention.head_count_kv", 4);
  ASSERT_TRUE(kv.ok()) << kv.status().ToString();
  EXPECT_EQ(*kv, (std::vector<uint32_t>{0, 0, 2, 0}));
  // A scalar means "same for every layer".
  EXPECT_EQ(*g.get_per_layer("granitehybrid.attention.head_count", 4),
            (std::vector<uint32_t>{4, 4, 4, 4}));
  EXPECT_FALSE(g.get_per_layer("granitehybrid.attention.head_count_kv", 5).ok());

  auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 32u);
  EXPECT_EQ((*tokens)[0], "<|end_of_text|>");
  EXPECT_EQ((*tokens)[2], "a");
  EXPECT_EQ((*tokens)[31], "é");
  auto types = g.get_array<int32_t>("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok());
  EXPECT_EQ((*types)[0], 3);
  EXPECT_EQ((*types)[5], 1);

  // Optional / fallback accessors.
  EXPECT_FALSE(g.get_optional<uint32_t>("granitehybrid.nope")->has_value());
  EXPECT_EQ(**g.get_optional<uint32_t>("granitehybrid.ssm.state_size"), 16u);
  EXPECT_EQ(*g.get_or<uint32_t>("granitehybrid.nope", 7), 7u);
  auto missing = g.get<uint32_t>("granitehybrid.nope");
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  auto wrong = g.get<uint32_t>("tokenizer.ggml.model");
  EXPECT_EQ(wrong.status().code(), ErrorCode::kFormat);
  EXPECT_NE(wrong.status().message().find("STRING"), std::string::npos);
}

TEST(GgufReader, FixtureTensorsPointIntoTheMapping) {
  auto f = GgufFile::open(fixture_path());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  ASSERT_EQ(g.tensors().size(), 10u);
  struct Expect {
    const char* name;
    GgmlType type;
    int64_t ne0, ne1;
  };
  const Expect want[] = {
      {"token_embd.weight", GgmlType::F16, 256, 32},
      {"output_norm.weight", GgmlType::F32, 256, 1},
      {"blk.0.ssm_a", GgmlType::F32, 1, 8},
      {"blk.0.ssm_out.weight", GgmlType::BF16, 512, 16},
      {"blk.0.ssm_in.weight", GgmlType::Q4_K, 256, 8},
      {"blk.1.ssm_in.weight", GgmlType::Q5_K, 256, 8},
      {"blk.1.ssm_out.weight", GgmlType::Q6_K, 512, 4},
      {"blk.2.attn_q.weight", GgmlType::Q8_0, 256, 32},
      {"blk.2.attn_k.weight", GgmlType::Q4_0, 256, 16},
  };
  for (const Expect& e : want) {
    const GgufTensorInfo* t = g.find_tensor(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->type, e.type) << e.name;
    EXPECT_EQ(t->ne[0], e.ne0) << e.name;
    EXPECT_EQ(t->ne[1], e.ne1) << e.name;
    EXPECT_EQ(t->nbytes, row_bytes(e.type, e.ne0) * e.ne1) << e.name;
    // Views into one mapping: data pointers differ exactly by the offsets.
    EXPECT_EQ(t->data - g.tensors()[0].data, static_cast<ptrdiff_t>(t->offset)) << e.name;
    EXPECT_EQ(t->offset % g.alignment(), 0u);
  }
  // output_norm weights were 1 + 0.1 * normal: all near 1.
  const GgufTensorInfo* norm = g.find_tensor("output_norm.weight");
  for (int i = 0; i < 256; ++i) {
    float x;
    std::memcpy(&x, norm->data + 4 * i, 4);
    EXPECT_GT(x, 0.3f);
    EXPECT_LT(x, 1.7f);
  }
  EXPECT_EQ(g.find_tensor("nope"), nullptr);
  const GgufTensorInfo& last = g.tensors().back();
  EXPECT_LE(g.data_offset() + last.offset + last.nbytes, g.file_size());
}

}  // namespace
}  // namespace chimera
