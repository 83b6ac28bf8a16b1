// Tokenizer tests: the shared test vectors (every ggml-vocab-*.gguf in ../shared/data/vocab, ids
// produced by the Hugging Face tokenizers), pre-tokenizer splits against Hugging Face `tokenizers`,
// and small in-memory vocabularies for merges, specials, BOS/EOS rules and streaming decode.
#include "runtime/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "gguf/gguf_file.h"
#include "models/synthetic.h"
#include "runtime/tokenizer_internal.h"

namespace chimera {
namespace {

namespace fs = std::filesystem;

const std::string kVocabDir = std::string(CHIMERA_SOURCE_DIR) + "/../shared/data/vocab";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// X.gguf.inp: inputs, each followed by "\n__ggml_vocab_test__\n"; X.gguf.out: one line of ids per
// input.
std::vector<std::string> read_inputs(const fs::path& p) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::string all = read_file(p);
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t hit = all.find(sep, pos);
    if (hit == std::string::npos) break;
    out.push_back(all.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  return out;
}

std::vector<std::vector<TokenId>> read_outputs(const fs::path& p) {
  std::vector<std::vector<TokenId>> out;
  std::istringstream in(read_file(p));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<TokenId> ids;
    TokenId id;
    while (ls >> id) ids.push_back(id);
    out.push_back(ids);
  }
  return out;
}

// The shared vectors of real tokenizers, and the repository's own (a Gemma-style SentencePiece
// vocabulary trained by python/make_gemma_tokenizer_fixture.py, expected ids from sentencepiece).
const std::string kRepoVocabDir = std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/vocab";

std::vector<fs::path> vocab_files() {
  std::vector<fs::path> files;
  for (const std::string& dir : {kVocabDir, kRepoVocabDir}) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("ggml-vocab-", 0) == 0 && e.path().extension() == ".gguf")
        files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

Tokenizer load(const fs::path& p) {
  auto file = GgufFile::open(p.string());
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  auto tok = Tokenizer::from_gguf(**file);
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return std::move(tok).value();
}

std::string show(const std::vector<TokenId>& ids) {
  std::string s;
  for (TokenId id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  return s;
}

TEST(TokenizerVectors, EveryVocabularyFileMatchesItsVectors) {
  std::vector<fs::path> files = vocab_files();
  ASSERT_GE(files.size(), 5u) << "test vectors not found in " << kVocabDir;
  for (const fs::path& gguf : files) {
    SCOPED_TRACE(gguf.filename().string());
    std::vector<std::string> inputs = read_inputs(gguf.string() + ".inp");
    std::vector<std::vector<TokenId>> expected = read_outputs(gguf.string() + ".out");
    ASSERT_FALSE(inputs.empty());
    ASSERT_EQ(inputs.size(), expected.size());
    auto file = GgufFile::open(gguf.string());
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    auto tok = Tokenizer::from_gguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto ids = tok->encode(inputs[i], {.add_special = false, .parse_special = false});
      ASSERT_TRUE(ids.ok()) << ids.status().ToString();
      EXPECT_EQ(*ids, expected[i])
          << "input " << i << ": '" << inputs[i] << "'\n got:     " << show(*ids)
          << "\n expected:" << show(expected[i]);
      // Detokenization gives back the input bytes.
      auto text = tok->decode(*ids);
      ASSERT_TRUE(text.ok());
      EXPECT_EQ(*text, inputs[i]) << "input " << i;
    }
  }
}

// The Gemma-style vocabulary's role markers are CONTROL tokens (as in Gemma's GGUFs): with
// parse_special they are matched in the text exactly where sentencepiece matches them; without,
// they are plain text.
TEST(TokenizerVectors, GemmaStyleRoleMarkersMatchSentencePieceWhenParsed) {
  const fs::path gguf = fs::path(kRepoVocabDir) / "ggml-vocab-gemma-spm-test.gguf";
  std::vector<std::string> inputs = read_inputs(gguf.string() + ".special.inp");
  std::vector<std::vector<TokenId>> expected = read_outputs(gguf.string() + ".special.out");
  ASSERT_FALSE(inputs.empty());
  ASSERT_EQ(inputs.size(), expected.size());
  Tokenizer tok = load(gguf);
  EXPECT_FALSE(tok.add_space_prefix());
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto ids = tok.encode(inputs[i], {.add_special = false, .parse_special = true});
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    EXPECT_EQ(*ids, expected[i]) << "input " << i << "\n got:     " << show(*ids)
                                 << "\n expected:" << show(expected[i]);
    auto plain = tok.encode(inputs[i], {.add_special = false, .parse_special = false});
    ASSERT_TRUE(plain.ok());
    EXPECT_GT(plain->size(), ids->size()) << "input " << i;
    auto text = tok.decode(*plain);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, inputs[i]) << "input " << i;
  }
}

// Expected splits from Hugging Face `tokenizers` 0.23 (pre_tokenizers.Sequence of
// Split(Regex(pattern), behavior="isolated"), the original (?i:...) contraction groups for the
// llama3 / qwen2 families), written as byte lengths of the pieces.
const char* const kSplitTexts[] = {
    "Hello world",
    " Hello World!",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? "
    "We'Ve a'lL",
    "3333333 12345678 1.5e10 3.14",
    "   leading and trailing   ",
    "tabs\tand\n\nnewlines\r\n  \n end",
    "\u00c4pfel \u00fcber stra\u00dfe \u0391\u0392\u0393 \u043f\u0440\u0438\u0432\u0435\u0442 "
    "\u043c\u0438\u0440",
    "\u4f60\u597d\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \uc548\ub155\ud558\uc138\uc694",
    "emoji \U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f \u2705",
    "!!!??? ... ------======= ''''''```````\"\"\"\"",
    "def f(x):\n    return x**2 # comment\n",
    "\u00a0nbsp\u2003em\u3000ideo",
    "cafe\u0301 nai\u0308ve \u0915\u093f\u0924\u093e\u092c \u0301x \u20dd!",  // combining marks
};

struct SplitCase {
  const char* pre;
  int text;
  std::vector<size_t> lengths;
};

const std::vector<SplitCase> kSplitCases = {
    {"gpt-2", 0, {5, 6}},
    {"gpt-2", 1, {6, 6, 1}},
    {"gpt-2", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4, 5,
                  2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 1, 2, 2, 1, 2}},
    {"gpt-2", 3, {7, 9, 2, 1, 1, 1, 2, 2, 1, 2}},
    {"gpt-2", 4, {2, 8, 4, 9, 3}},
    {"gpt-2", 5, {4, 1, 3, 1, 1, 8, 5, 4}},
    {"gpt-2", 6, {6, 6, 8, 7, 13, 7}},
    {"gpt-2", 7, {12, 16, 16}},
    {"gpt-2", 8, {5, 5, 2, 6, 1, 15, 4}},
    {"gpt-2", 9, {6, 4, 14, 18}},
    {"gpt-2", 10, {3, 2, 1, 1, 2, 4, 7, 2, 2, 1, 2, 8, 1}},
    {"gpt-2", 11, {2, 4, 3, 2, 3, 4}},
    {"llama-bpe", 0, {5, 6}},
    {"llama-bpe", 1, {6, 6, 1}},
    {"llama-bpe", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4,
                      5, 2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 3, 2, 3}},
    {"llama-bpe", 3, {3, 3, 1, 1, 3, 3, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2}},
    {"llama-bpe", 4, {2, 8, 4, 9, 3}},
    {"llama-bpe", 5, {4, 4, 2, 8, 5, 4}},
    {"llama-bpe", 6, {6, 6, 8, 7, 13, 7}},
    {"llama-bpe", 7, {12, 16, 16}},
    {"llama-bpe", 8, {5, 5, 2, 6, 1, 15, 4}},
    {"llama-bpe", 9, {6, 4, 14, 18}},
    {"llama-bpe", 10, {3, 2, 2, 3, 3, 7, 2, 2, 1, 2, 8, 1}},
    {"llama-bpe", 11, {6, 5, 7}},
    {"dbrx", 0, {5, 6}},
    {"dbrx", 1, {6, 6, 1}},
    {"dbrx", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4,
                 5, 2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 3, 2, 3}},
    {"dbrx", 3, {3, 3, 1, 1, 3, 3, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2}},
    {"dbrx", 4, {2, 8, 4, 9, 3}},
    {"dbrx", 5, {4, 4, 2, 8, 5, 4}},
    {"dbrx", 6, {6, 6, 8, 7, 13, 7}},
    {"dbrx", 7, {12, 16, 16}},
    {"dbrx", 8, {5, 5, 2, 6, 1, 15, 4}},
    {"dbrx", 9, {6, 4, 14, 18}},
    {"dbrx", 10, {3, 2, 2, 3, 3, 7, 2, 2, 1, 2, 8, 1}},
    {"dbrx", 11, {6, 5, 7}},
    {"qwen2", 0, {5, 6}},
    {"qwen2", 1, {6, 6, 1}},
    {"qwen2", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4,
                  5, 2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 3, 2, 3}},
    {"qwen2", 3, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
    {"qwen2", 4, {2, 8, 4, 9, 3}},
    {"qwen2", 5, {4, 4, 2, 8, 5, 4}},
    {"qwen2", 6, {6, 6, 8, 7, 13, 7}},
    {"qwen2", 7, {12, 16, 16}},
    {"qwen2", 8, {5, 5, 2, 6, 1, 15, 4}},
    {"qwen2", 9, {6, 4, 14, 18}},
    {"qwen2", 10, {3, 2, 2, 3, 3, 7, 2, 2, 1, 2, 8, 1}},
    {"qwen2", 11, {6, 5, 7}},
    {"refact", 0, {5, 6}},
    {"refact", 1, {6, 6, 1}},
    {"refact", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4, 5,
                   2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 1, 2, 2, 1, 2}},
    {"refact", 3, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                   1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
    {"refact", 4, {2, 8, 4, 9, 3}},
    {"refact", 5, {4, 1, 3, 1, 1, 8, 5, 4}},
    {"refact", 6, {6, 6, 8, 7, 13, 7}},
    {"refact", 7, {12, 16, 16}},
    {"refact", 8, {5, 5, 2, 6, 1, 15, 4}},
    {"refact", 9, {6, 4, 14, 18}},
    {"refact", 10, {3, 2, 1, 1, 2, 4, 7, 2, 2, 1, 2, 8, 1}},
    {"refact", 11, {2, 4, 3, 2, 3, 4}},
    {"mpt", 0, {5, 6}},
    {"mpt", 1, {6, 6, 1}},
    {"mpt", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4, 5,
                2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 1, 2, 2, 1, 2}},
    {"mpt", 3, {7, 9, 2, 1, 1, 1, 2, 2, 1, 2}},
    {"mpt", 4, {2, 8, 4, 9, 3}},
    {"mpt", 5, {4, 1, 3, 1, 1, 8, 5, 4}},
    {"mpt", 6, {6, 6, 8, 7, 13, 7}},
    {"mpt", 7, {12, 16, 16}},
    {"mpt", 8, {5, 5, 2, 6, 1, 15, 4}},
    {"mpt", 9, {6, 4, 14, 18}},
    {"mpt", 10, {3, 2, 1, 1, 2, 4, 7, 2, 2, 1, 2, 8, 1}},
    {"mpt", 11, {2, 4, 3, 2, 3, 4}},
    {"deepseek-coder", 0, {5, 6}},
    {"deepseek-coder", 1, {6, 6, 1}},
    {"deepseek-coder", 2, {1, 1, 2, 5, 2, 4, 3, 1, 1, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4, 5,
                           2, 1, 2, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 1, 2, 2, 1, 2}},
    {"deepseek-coder", 3, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                           1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
    {"deepseek-coder", 4, {2, 8, 4, 9, 3}},
    {"deepseek-coder", 5, {4, 4, 1, 1, 8, 1, 1, 2, 1, 4}},
    {"deepseek-coder", 6, {6, 6, 8, 7, 13, 7}},
    {"deepseek-coder", 7, {12, 1, 15, 1, 15}},
    {"deepseek-coder", 8, {5, 5, 2, 6, 1, 5, 3, 8, 3}},
    {"deepseek-coder", 9, {6, 4, 7, 7, 7, 7, 4}},
    {"deepseek-coder", 10, {3, 2, 1, 1, 2, 1, 3, 7, 2, 2, 1, 2, 8, 1}},
    {"deepseek-coder", 11, {6, 3, 2, 3, 4}},
    {"default", 0, {5, 6}},
    {"default", 1, {6, 6, 1}},
    {"default", 2, {1, 1, 2, 5, 1, 1, 4, 3, 1, 1, 6, 1, 1, 1, 2, 4, 5, 1, 1, 1, 1, 4,
                    5, 2, 1, 2, 5, 3, 1, 1, 1, 1, 4, 5, 5, 4, 1, 3, 1, 2, 2, 1, 2}},
    {"default", 3, {3, 3, 1, 1, 3, 3, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2}},
    {"default", 4, {2, 8, 4, 9, 3}},
    {"default", 5, {4, 1, 3, 1, 1, 8, 5, 4}},
    {"default", 6, {6, 6, 8, 7, 13, 7}},
    {"default", 7, {12, 16, 16}},
    {"default", 8, {5, 5, 1, 1, 6, 1, 15, 4}},
    {"default", 9, {6, 1, 3, 1, 13, 1, 6, 7, 4}},
    {"default", 10, {3, 2, 1, 1, 2, 4, 7, 2, 2, 1, 1, 1, 8, 1}},
    {"default", 11, {2, 4, 3, 2, 3, 4}},
    // qwen35 rows: python/make_qwen35_tokenizer_vectors.py (HF tokenizers 0.23.3)
    {"qwen35", 0, {5, 6}},
    {"qwen35", 1, {6, 6, 1}},
    {"qwen35", 2, {1, 3, 5, 2, 4, 3, 2, 6, 1, 2, 2, 4, 5, 1, 2, 1, 4,
                   5, 2, 3, 5, 3, 1, 2, 1, 4, 5, 5, 4, 1, 3, 3, 2, 3}},
    {"qwen35", 3, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                   1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
    {"qwen35", 4, {2, 8, 4, 9, 3}},
    {"qwen35", 5, {4, 4, 2, 8, 5, 4}},
    {"qwen35", 6, {6, 6, 8, 7, 13, 7}},
    {"qwen35", 7, {12, 16, 16}},
    {"qwen35", 8, {5, 5, 2, 6, 1, 12, 3, 4}},
    {"qwen35", 9, {6, 4, 14, 18}},
    {"qwen35", 10, {3, 2, 2, 3, 3, 7, 2, 2, 1, 2, 8, 1}},
    {"qwen35", 11, {6, 5, 7}},
    {"qwen35", 12, {6, 8, 16, 4, 4, 1}},
};

TEST(PreTokenizer, SplitsLikeHuggingFaceTokenizers) {
  for (const SplitCase& c : kSplitCases) {
    auto spec = tokenizer_detail::pre_tokenizer_for(c.pre);
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    auto splitter = tokenizer_detail::RegexSplitter::create(spec->regexes);
    ASSERT_TRUE(splitter.ok()) << splitter.status().ToString();
    std::string_view text = kSplitTexts[c.text];
    std::vector<tokenizer_detail::Span> pieces;
    ASSERT_TRUE((*splitter)->split(text, &pieces).ok());
    std::vector<size_t> lengths;
    size_t pos = 0;
    for (const auto& p : pieces) {
      EXPECT_EQ(p.offset, pos);  // pieces tile the text
      pos += p.length;
      lengths.push_back(p.length);
    }
    EXPECT_EQ(lengths, c.lengths) << c.pre << " on text " << c.text << ": '" << text << "'";
  }
}

TEST(PreTokenizer, EveryAdvertisedNameResolvesAndCompiles) {
  for (const std::string& name : known_pre_tokenizers()) {
    auto spec = tokenizer_detail::pre_tokenizer_for(name);
    ASSERT_TRUE(spec.ok()) << name;
    auto splitter = tokenizer_detail::RegexSplitter::create(spec->regexes);
    EXPECT_TRUE(splitter.ok()) << name << ": " << splitter.status().ToString();
  }
  EXPECT_TRUE(tokenizer_detail::pre_tokenizer_for("").ok());  // absent: default
}

TEST(PreTokenizer, InvalidUtf8IsKeptNotDropped) {
  auto spec = tokenizer_detail::pre_tokenizer_for("llama-bpe");
  ASSERT_TRUE(spec.ok());
  auto splitter = tokenizer_detail::RegexSplitter::create(spec->regexes);
  ASSERT_TRUE(splitter.ok());
  std::string text = "ab\xff\xfe cd\xe2\x82 x";
  std::vector<tokenizer_detail::Span> pieces;
  ASSERT_TRUE((*splitter)->split(text, &pieces).ok());
  size_t total = 0;
  for (const auto& p : pieces) total += p.length;
  EXPECT_EQ(total, text.size());
}

// ---- small in-memory vocabularies ----

// Byte-level BPE vocabulary: the 256 byte characters, then `extra` tokens.
TokenizerData bpe_data(const std::string& pre, std::vector<std::string> extra,
                       std::vector<std::string> merges) {
  TokenizerData d;
  d.model = "gpt2";
  d.pre = pre;
  for (const std::string& s : tokenizer_detail::byte_to_unicode()) d.tokens.push_back(s);
  for (std::string& s : extra) d.tokens.push_back(std::move(s));
  d.merges = std::move(merges);
  return d;
}

Tokenizer make(TokenizerData d) {
  auto t = Tokenizer::create(std::move(d));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

std::vector<TokenId> enc(const Tokenizer& t, std::string_view text, bool add_special = false,
                         bool parse_special = false) {
  auto r = t.encode(text, {.add_special = add_special, .parse_special = parse_special});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::vector<TokenId>{};
}

// The GPT-2 vocabulary and merges (ggml-vocab-gpt-2.gguf) under other families' pre-tokenizers,
// encoded end to end by Hugging Face `tokenizers` 0.23 (models.BPE with ignore_merges for the
// llama3 family; Split(..., "isolated") regexes then ByteLevel(use_regex=False)), texts as above.
struct EncodeCase {
  const char* pre;
  int text;
  std::vector<TokenId> ids;
};

const std::vector<EncodeCase> kEncodeCases = {
    {"gpt-2", 0, {15496, 995}},
    {"gpt-2", 1, {18435, 2159, 0}},
    {"gpt-2", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                  30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                  588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"gpt-2", 3, {24840, 20370, 17031, 2231, 30924, 352, 13, 20, 68, 940, 513, 13, 1415}},
    {"gpt-2", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"gpt-2", 5, {8658, 82, 197, 392, 198, 198, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"gpt-2", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                  68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                  18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"gpt-2", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                  22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                  243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"gpt-2",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"gpt-2",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"gpt-2",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"gpt-2", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"llama-bpe", 0, {15496, 995}},
    {"llama-bpe", 1, {18435, 2159, 0}},
    {"llama-bpe", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                      30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                      588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"llama-bpe",
     3,
     {20370, 20370, 18, 220, 10163, 29228, 3695, 220, 16, 13, 20, 68, 940, 220, 18, 13, 1415}},
    {"llama-bpe", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"llama-bpe", 5, {8658, 82, 197, 392, 628, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"llama-bpe", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                      68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                      18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"llama-bpe", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                      22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                      243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"llama-bpe",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"llama-bpe",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"llama-bpe",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"llama-bpe", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"dbrx", 0, {15496, 995}},
    {"dbrx", 1, {18435, 2159, 0}},
    {"dbrx", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                 30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                 588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"dbrx",
     3,
     {20370, 20370, 18, 220, 10163, 29228, 3695, 220, 16, 13, 20, 68, 940, 220, 18, 13, 1415}},
    {"dbrx", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"dbrx", 5, {8658, 82, 197, 392, 628, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"dbrx", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                 68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                 18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"dbrx", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                 22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                 243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"dbrx",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"dbrx",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"dbrx",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"dbrx", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"qwen2", 0, {15496, 995}},
    {"qwen2", 1, {18435, 2159, 0}},
    {"qwen2", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                  30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                  588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"qwen2", 3, {18, 18, 18,  18, 18, 18, 18, 220, 16, 17,  18, 19, 20, 21,
                  22, 23, 220, 16, 13, 20, 68, 16,  15, 220, 18, 13, 16, 19}},
    {"qwen2", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"qwen2", 5, {8658, 82, 197, 392, 628, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"qwen2", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                  68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                  18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"qwen2", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                  22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                  243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"qwen2",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"qwen2",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"qwen2",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"qwen2", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"refact", 0, {15496, 995}},
    {"refact", 1, {18435, 2159, 0}},
    {"refact", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                   30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                   588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"refact", 3, {18, 18, 18,  18, 18, 18, 18, 220, 16, 17,  18, 19, 20, 21,
                   22, 23, 220, 16, 13, 20, 68, 16,  15, 220, 18, 13, 16, 19}},
    {"refact", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"refact", 5, {8658, 82, 197, 392, 198, 198, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"refact", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                   68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                   18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"refact", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                   22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                   243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"refact",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"refact",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"refact",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"refact", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"mpt", 0, {15496, 995}},
    {"mpt", 1, {18435, 2159, 0}},
    {"mpt", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"mpt", 3, {24840, 20370, 17031, 2231, 30924, 352, 13, 20, 68, 940, 513, 13, 1415}},
    {"mpt", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"mpt", 5, {8658, 82, 197, 392, 198, 198, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"mpt", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"mpt", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"mpt",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"mpt",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"mpt",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"mpt", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"deepseek-coder", 0, {15496, 995}},
    {"deepseek-coder", 1, {18435, 2159, 0}},
    {"deepseek-coder", 2, {40,  6,    303,  587, 705,  44040, 339, 6,  82,  612,
                           11,  705,  2200, 345, 1654, 30,    705, 44, 407, 1654,
                           314, 6,    297,  787, 340,  11,    705, 35, 345, 588,
                           617, 8887, 30,   775, 6,    26979, 257, 6,  75,  43}},
    {"deepseek-coder", 3, {18, 18, 18,  18, 18, 18, 18, 220, 16, 17,  18, 19, 20, 21,
                           22, 23, 220, 16, 13, 20, 68, 16,  15, 220, 18, 13, 16, 19}},
    {"deepseek-coder", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"deepseek-coder", 5, {8658, 82, 197, 392, 198, 198, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"deepseek-coder", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                           68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                           18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"deepseek-coder", 7, {19526, 254,   25001, 121, 10310, 244, 45911, 234, 220, 46036,
                           22174, 28618, 2515,  94,  31676, 220, 168,   243, 230, 167,
                           227,   243,   47991, 246, 168,   226, 116,   168, 248, 242}},
    {"deepseek-coder",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929, 220,
      26486, 227}},
    {"deepseek-coder",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"deepseek-coder",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"deepseek-coder", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"default", 0, {15496, 995}},
    {"default", 1, {18435, 2159, 0}},
    {"default", 2, {40,   6,   303,  587,  220, 6,    44040, 339, 6, 82, 612,
                    11,   220, 6,    2200, 345, 1654, 30,    220, 6, 44, 407,
                    1654, 314, 6,    297,  787, 340,  11,    220, 6, 35, 345,
                    588,  617, 8887, 30,   775, 6,    26979, 257, 6, 75, 43}},
    {"default",
     3,
     {20370, 20370, 18, 220, 10163, 29228, 3695, 220, 16, 13, 20, 68, 940, 220, 18, 13, 1415}},
    {"default", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"default", 5, {8658, 82, 197, 392, 198, 198, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"default", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                    68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                    18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"default", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                    22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                    243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"default",
     8,
     {368, 31370, 12520, 248, 222, 220, 7, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"default",
     9,
     {10185, 28358, 220, 986, 220, 23031, 1421, 18604, 220, 39115, 7061, 33153, 15506, 63, 15931,
      15931}},
    {"default",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 220, 2, 2912, 198}},
    {"default", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"falcon", 0, {15496, 995}},
    {"falcon", 1, {18435, 2159, 0}},
    {"falcon", 2, {40,  6,    303, 587, 220, 6,    44040, 339,  6,   82,    612, 11,  220, 6,  2200,
                   345, 1654, 30,  220, 6,   44,   407,   1654, 314, 6,     297, 787, 340, 11, 220,
                   6,   35,   345, 588, 617, 8887, 30,    775,  6,   26979, 257, 6,   75,  43}},
    {"falcon", 3, {20370, 20370, 18, 220, 10163, 29228, 3695, 352, 13, 20, 68, 940, 513, 13, 1415}},
    {"falcon", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"falcon", 5, {8658, 82, 197, 392, 198, 198, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"falcon", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                   68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                   18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"falcon", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                   22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                   243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"falcon",
     8,
     {368, 31370, 12520, 248, 222, 220, 7, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"falcon",
     9,
     {10185, 28358, 220, 986, 220, 23031, 1421, 18604, 220, 39115, 7061, 33153, 15506, 63, 15931,
      15931}},
    {"falcon",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 220, 2, 2912, 198}},
    {"falcon", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    // qwen35 rows: python/make_qwen35_tokenizer_vectors.py (HF tokenizers 0.23.3)
    {"qwen35", 0, {15496, 995}},
    {"qwen35", 1, {18435, 2159, 0}},
    {"qwen35", 2, {40,  1053, 587,  705, 44040, 339, 338,   612, 11,  705, 2200, 345, 1654,
                   30,  705,  44,   407, 1654,  314, 1183,  787, 340, 11,  705,  35,  345,
                   588, 617,  8887, 30,  775,   6,   26979, 257, 6,   75,  43}},
    {"qwen35", 3, {18, 18, 18,  18, 18, 18, 18, 220, 16, 17,  18, 19, 20, 21,
                   22, 23, 220, 16, 13, 20, 68, 16,  15, 220, 18, 13, 16, 19}},
    {"qwen35", 4, {220, 220, 3756, 290, 25462, 220, 220, 220}},
    {"qwen35", 5, {8658, 82, 197, 392, 628, 3605, 6615, 201, 198, 220, 220, 198, 886}},
    {"qwen35", 6, {127,   226,   79,    69,    417,   6184, 120,   527,   3534, 39683,
                   68,    7377,  239,   138,   240,   138,  241,   12466, 123,  21169,
                   18849, 38857, 16843, 20375, 12466, 120,  18849, 21169}},
    {"qwen35", 7, {19526, 254,   25001, 121, 10310, 244,   45911, 234, 23294, 241,
                   22174, 28618, 2515,  94,  31676, 23821, 243,   230, 167,   227,
                   243,   47991, 246,   168, 226,   116,   168,   248, 242}},
    {"qwen35",
     8,
     {368, 31370, 12520, 248, 222, 357, 11265, 8, 30325, 114, 447, 235, 8582, 234, 104, 37929,
      14519, 227}},
    {"qwen35",
     9,
     {10185, 28358, 2644, 40103, 1421, 18604, 705, 39115, 6, 33153, 15506, 63, 15931, 15931}},
    {"qwen35",
     10,
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 1303, 2912, 198}},
    {"qwen35", 11, {1849, 77, 24145, 447, 225, 368, 5099, 222, 1651}},
    {"qwen35", 12, {66,    8635, 136,   223,   299, 1872, 136, 230, 303, 28225, 243, 11976, 123,
                    11976, 97,   48077, 11976, 105, 220,  136, 223, 87,  2343,  225, 251,   0}},
};

TEST(BpeTokenizer, EveryFamilyEncodesLikeHuggingFaceOnTheGpt2Vocabulary) {
  auto file = GgufFile::open(kVocabDir + "/ggml-vocab-gpt-2.gguf");
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto base = read_tokenizer_data(**file);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  std::string current;
  std::optional<Tokenizer> tok;
  for (const EncodeCase& c : kEncodeCases) {
    if (current != c.pre) {
      TokenizerData d = *base;
      d.pre = c.pre;
      tok.emplace(make(std::move(d)));
      current = c.pre;
    }
    std::string_view text = kSplitTexts[c.text];
    EXPECT_EQ(enc(*tok, text), c.ids) << c.pre << " on text " << c.text << ": '" << text << "'";
    EXPECT_EQ(*tok->decode(enc(*tok, text)), text);
  }
}

TEST(BpeTokenizer, LowestRankMergesFirst) {
  // 256 = "ab", 257 = "bc", 258 = "abc"
  Tokenizer t1 = make(bpe_data("gpt-2", {"ab", "bc", "abc"}, {"b c", "a b", "ab c"}));
  EXPECT_EQ(enc(t1, "abc"), (std::vector<TokenId>{'a', 257}));  // "b c" outranks "a b"
  Tokenizer t2 = make(bpe_data("gpt-2", {"ab", "bc", "abc"}, {"a b", "b c", "ab c"}));
  EXPECT_EQ(enc(t2, "abc"), (std::vector<TokenId>{258}));
}

TEST(BpeTokenizer, EqualRanksMergeLeftmostFirst) {
  Tokenizer t = make(bpe_data("gpt-2", {"aa"}, {"a a"}));
  EXPECT_EQ(enc(t, "aaa"), (std::vector<TokenId>{256, 'a'}));
  EXPECT_EQ(enc(t, "aaaa"), (std::vector<TokenId>{256, 256}));
}

TEST(BpeTokenizer, SpaceIsByteEncoded) {
  // "\xc4\xa0" is U+0120, the byte-level image of ' '.
  Tokenizer t = make(bpe_data("gpt-2",
                              {"\xc4\xa0"
                               "a"},
                              {"\xc4\xa0 a"}));
  EXPECT_EQ(enc(t, "a a"), (std::vector<TokenId>{'a', 256}));
  EXPECT_EQ(*t.decode({'a', 256}), "a a");
  // Byte 0x0A maps to U+010A; the token of byte 10 decodes to "\n".
  TokenId nl = t.find_token("\xc4\x8a");
  ASSERT_NE(nl, kNoToken);
  EXPECT_EQ(t.piece(nl), "\n");
}

TEST(BpeTokenizer, IgnoreMergesEmitsWholeWordsOfLlama3Family) {
  // "abc" is in the vocabulary but no merge builds it.
  Tokenizer llama3 = make(bpe_data("llama-bpe", {"abc"}, {}));
  EXPECT_EQ(enc(llama3, "abc"), (std::vector<TokenId>{256}));
  Tokenizer dbrx = make(bpe_data("dbrx", {"abc"}, {}));  // same regex, merges not ignored
  EXPECT_EQ(enc(dbrx, "abc"), (std::vector<TokenId>{'a', 'b', 'c'}));
}

TEST(BpeTokenizer, BosEosDefaultsAndMetadataOverrides) {
  Tokenizer gpt2 = make(bpe_data("gpt-2", {}, {}));
  EXPECT_FALSE(gpt2.add_bos());
  EXPECT_EQ(enc(gpt2, "a", true), (std::vector<TokenId>{'a'}));
  Tokenizer llama3 = make(bpe_data("llama-bpe", {"<|begin_of_text|>"}, {}));
  EXPECT_TRUE(llama3.add_bos());
  TokenizerData d = bpe_data("llama-bpe", {"<|begin_of_text|>", "<|end_of_text|>"}, {});
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[256] = d.token_types[257] = 3;
  d.bos_id = 256;
  d.eos_id = 257;
  Tokenizer with_ids = make(d);
  EXPECT_EQ(enc(with_ids, "a", true), (std::vector<TokenId>{256, 'a'}));
  d.add_bos = false;
  d.add_eos = true;
  Tokenizer overridden = make(d);
  EXPECT_EQ(enc(overridden, "a", true), (std::vector<TokenId>{'a', 257}));
  EXPECT_EQ(enc(overridden, "a", false), (std::vector<TokenId>{'a'}));
  // <|end_of_text|> is recognised as end of generation; EOS is too.
  EXPECT_TRUE(overridden.is_eog(257));
  EXPECT_FALSE(overridden.is_eog('a'));
}

TEST(BpeTokenizer, SpecialTokensParsedOnlyWhenAsked) {
  TokenizerData d = bpe_data("qwen2", {"<|im_start|>", "<|im_end|>", "<tool>"}, {});
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[256] = 3;  // control
  d.token_types[257] = 1;  // normal in the file, but an end-of-turn text: forced to control
  d.token_types[258] = 4;  // user-defined: always matched
  Tokenizer t = make(d);
  EXPECT_EQ(t.token_type(257), TokenType::kControl);
  EXPECT_TRUE(t.is_eog(257));
  EXPECT_EQ(t.eot(), 257);
  std::vector<TokenId> parsed = enc(t, "<|im_start|>x<tool><|im_end|>", false, true);
  EXPECT_EQ(parsed, (std::vector<TokenId>{256, 'x', 258, 257}));
  std::vector<TokenId> literal = enc(t, "<|im_start|>x<tool>", false, false);
  EXPECT_EQ(literal.back(), 258);
  EXPECT_GT(literal.size(), 3u);  // "<|im_start|>" spelled out as text
  EXPECT_EQ(*t.decode(literal), "<|im_start|>x<tool>");
  // Control tokens decode to nothing unless asked.
  EXPECT_EQ(*t.decode(parsed), "x<tool>");
  EXPECT_EQ(*t.decode(parsed, {.special = true}), "<|im_start|>x<tool><|im_end|>");
}

TEST(BpeTokenizer, LongerSpecialTokenWinsOverlaps) {
  TokenizerData d = bpe_data("gpt-2", {"<a>", "<a><b>"}, {});
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[256] = d.token_types[257] = 3;
  Tokenizer t = make(d);
  EXPECT_EQ(enc(t, "<a><b><a>", false, true), (std::vector<TokenId>{257, 256}));
}

TEST(BpeTokenizer, BadMetadataGivesErrors) {
  TokenizerData d = bpe_data("no-such-pre", {}, {});
  auto t = Tokenizer::create(d);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("no-such-pre"), std::string::npos);
  EXPECT_NE(t.status().message().find("llama-bpe"), std::string::npos);  // lists known names
  d = bpe_data("gpt-2", {}, {"ab"});
  t = Tokenizer::create(d);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("merges[0]"), std::string::npos);
  d = bpe_data("gpt-2", {}, {});
  d.model = "t5";
  t = Tokenizer::create(d);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), ErrorCode::kUnsupported);
  d = bpe_data("gpt-2", {}, {});
  d.scores = {1.0f};
  EXPECT_FALSE(Tokenizer::create(d).ok());
  d = bpe_data("gpt-2", {}, {});
  d.tokens.clear();
  EXPECT_FALSE(Tokenizer::create(d).ok());
}

TEST(BpeTokenizer, LongWordIsNotQuadratic) {
  // One 200k-letter word: a quadratic merge loop would take minutes.
  std::vector<std::string> extra = {"aa", "aaaa", "aaaaaaaa"};
  Tokenizer t = make(bpe_data("gpt-2", extra, {"a a", "aa aa", "aaaa aaaa"}));
  std::string word(200000, 'a');
  auto start = std::chrono::steady_clock::now();
  std::vector<TokenId> ids = enc(t, word);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids, std::vector<TokenId>(25000, 258));
  EXPECT_LT(secs, 5.0);  // ~0.05 s in Release; generous for sanitizers and a busy machine
}

// SentencePiece vocabulary: <unk>, <s>, </s>, 256 byte tokens, then `pieces` with scores.
TokenizerData spm_data(std::vector<std::pair<std::string, float>> pieces) {
  TokenizerData d;
  d.model = "llama";
  d.tokens = {"<unk>", "<s>", "</s>"};
  d.token_types = {2, 3, 3};
  d.scores = {0, 0, 0};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    d.tokens.push_back(buf);
    d.token_types.push_back(6);
    d.scores.push_back(0);
  }
  for (auto& [text, score] : pieces) {
    d.tokens.push_back(text);
    d.token_types.push_back(1);
    d.scores.push_back(score);
  }
  return d;
}

constexpr TokenId kSpmFirst = 259;  // first piece after the byte tokens

TEST(SpmTokenizer, HighestScoreMergesFirstAndSpacePrefixIsAdded) {
  // "\xe2\x96\x81" is U+2581, SentencePiece's space.
  Tokenizer t = make(spm_data({{"\xe2\x96\x81", -1},
                               {"a", -1},
                               {"b", -1},
                               {"\xe2\x96\x81"
                                "a",
                                -2},
                               {"ab", -3},
                               {"\xe2\x96\x81"
                                "ab",
                                -4}}));
  EXPECT_TRUE(t.add_bos());
  // "▁a" (score -2) beats "ab" (-3); then "▁a"+"b" = "▁ab".
  EXPECT_EQ(enc(t, "ab"), (std::vector<TokenId>{kSpmFirst + 5}));
  EXPECT_EQ(enc(t, "ab", true), (std::vector<TokenId>{1, kSpmFirst + 5}));
  EXPECT_EQ(*t.decode({1, kSpmFirst + 5}), "ab");
  EXPECT_EQ(*t.decode({kSpmFirst + 5}, {.remove_space_prefix = false}), " ab");
}

TEST(SpmTokenizer, ByteFallbackRoundTrips) {
  Tokenizer t = make(spm_data({{"\xe2\x96\x81", -1}, {"a", -1}}));
  std::string text = "a\xc3\xa9";  // "aé": é is not in the vocabulary
  std::vector<TokenId> ids = enc(t, text);
  EXPECT_EQ(ids, (std::vector<TokenId>{kSpmFirst, kSpmFirst + 1, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(*t.decode(ids), text);
}

TEST(SpmTokenizer, SpacePrefixAfterSpecialTokens) {
  Tokenizer t = make(spm_data({{"\xe2\x96\x81", -1}, {"a", -1}}));
  std::vector<TokenId> ids = enc(t, "a</s>a", false, true);
  EXPECT_EQ(ids, (std::vector<TokenId>{kSpmFirst, kSpmFirst + 1, 2, kSpmFirst, kSpmFirst + 1}));
  TokenizerData d = spm_data({{"a", -1}});
  d.add_space_prefix = false;
  Tokenizer no_prefix = make(d);
  EXPECT_EQ(enc(no_prefix, "a"), (std::vector<TokenId>{kSpmFirst}));
}

TEST(SpmTokenizer, TokensSpanningSpacesStillMerge) {
  // "a\u2581b" crosses a word boundary, so the word-by-word shortcut must not be used.
  Tokenizer t = make(spm_data({{"\xe2\x96\x81", -1},
                               {"a", -1},
                               {"b", -1},
                               {"a\xe2\x96\x81", -0.5f},
                               {"a\xe2\x96\x81"
                                "b",
                                -0.1f}}));
  EXPECT_EQ(enc(t, "a b"), (std::vector<TokenId>{kSpmFirst, kSpmFirst + 4}));
  EXPECT_EQ(*t.decode(enc(t, "a b")), "a b");
}

TEST(Decode, OutOfRangeIdIsAnError) {
  Tokenizer t = make(spm_data({{"a", -1}}));
  auto r = t.decode({1, 100000});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("100000"), std::string::npos);
  StreamDecoder sd(t);
  EXPECT_FALSE(sd.push(-1).ok());
}

TEST(StreamDecoder, HoldsBackPartialUtf8) {
  Tokenizer t = make(spm_data({{"\xe2\x96\x81", -1}, {"a", -1}}));
  // "a€" with € (E2 82 AC) spelled as three byte tokens.
  std::vector<TokenId> ids = {1, kSpmFirst, kSpmFirst + 1, 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 3 + 'x'};
  StreamDecoder sd(t);
  std::vector<std::string> outs;
  for (TokenId id : ids) {
    auto r = sd.push(id);
    ASSERT_TRUE(r.ok());
    outs.push_back(*r);
  }
  EXPECT_EQ(outs, (std::vector<std::string>{"", "", "a", "", "", "\xe2\x82\xac", "x"}));
  EXPECT_EQ(sd.flush(), "");
  // A sequence cut off at the end comes out of flush(); invalid bytes pass straight through.
  StreamDecoder sd2(t);
  EXPECT_EQ(*sd2.push(3 + 0xE2), "");
  EXPECT_EQ(sd2.flush(), "\xe2");
  StreamDecoder sd3(t);
  EXPECT_EQ(*sd3.push(3 + 0xFF), "\xff");
}

TEST(StreamDecoder, ConcatenationEqualsDecodeOnRealVocabularies) {
  std::vector<fs::path> files = vocab_files();
  ASSERT_FALSE(files.empty());
  for (const fs::path& gguf : files) {
    Tokenizer t = load(gguf);
    for (const std::string& text : read_inputs(gguf.string() + ".inp")) {
      std::vector<TokenId> ids = enc(t, text, true);
      std::string streamed;
      StreamDecoder sd(t);
      for (TokenId id : ids) {
        auto piece = sd.push(id);
        ASSERT_TRUE(piece.ok());
        // Every chunk handed out ends on a complete UTF-8 sequence (or invalid bytes).
        EXPECT_EQ(utf8_complete_prefix(*piece), piece->size());
        streamed += *piece;
      }
      streamed += sd.flush();
      EXPECT_EQ(streamed, *t.decode(ids)) << gguf.filename();
      EXPECT_EQ(streamed, text) << gguf.filename();
    }
  }
}

TEST(Utf8, CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(utf8_complete_prefix("a\xc3"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\xc3\xa9"), 3u);
  EXPECT_EQ(utf8_complete_prefix("a\xf0\x9f\x9a"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\xf0\x9f\x9a\x80"), 5u);
  EXPECT_EQ(utf8_complete_prefix("a\xff"), 2u);  // never valid: not held
  EXPECT_EQ(utf8_complete_prefix("a\xe2"
                                 "b"),
            3u);  // broken sequence: not held
}

TEST(TokenizerGguf, MissingTokenizerMetadataIsAClearError) {
  // The GGUF reader's own fixture holds a model without any tokenizer.ggml.* keys? Build one.
  std::string buf;
  auto put32 = [&](uint32_t v) { buf.append(reinterpret_cast<const char*>(&v), 4); };
  auto put64 = [&](uint64_t v) { buf.append(reinterpret_cast<const char*>(&v), 8); };
  buf += "GGUF";
  put32(3);
  put64(0);  // tensors
  put64(1);  // kvs
  std::string key = "general.architecture", val = "llama";
  put64(key.size());
  buf += key;
  put32(8);  // STRING
  put64(val.size());
  buf += val;
  auto file =
      GgufFile::from_buffer(reinterpret_cast<const uint8_t*>(buf.data()), buf.size(), "mem");
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto t = Tokenizer::from_gguf(**file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("tokenizer.ggml.model"), std::string::npos);
}

TEST(TokenizerPerf, FewMegabytesEncodeQuickly_Slow) {
  std::vector<fs::path> files = vocab_files();
  ASSERT_FALSE(files.empty());
  for (const fs::path& gguf : files) {
    Tokenizer t = load(gguf);
    std::string corpus;
    for (const std::string& s : read_inputs(gguf.string() + ".inp")) corpus += s + "\n";
    std::string big;
    while (big.size() < (2u << 20)) big += corpus;
    auto start = std::chrono::steady_clock::now();
    std::vector<TokenId> ids = enc(t, big, false, true);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %.1f MB -> %zu tokens in %.3f s\n", gguf.filename().c_str(), big.size() / 1e6,
                ids.size(), secs);
    EXPECT_EQ(*t.decode(ids, {.special = true}), big);
    EXPECT_LT(secs, 10.0);  // ~0.5 s expected on one core; generous for a shared machine
  }
}

}  // namespace
}  // namespace chimera

namespace chimera {
namespace {

// Synthetic models carry a real byte-level BPE vocabulary (so llama.cpp loads them too): our
// tokenizer reads it, merges byte pairs by rank and round-trips any bytes.
TEST(Tokenizer, SyntheticModelVocabularyIsAWorkingBpe) {
  SyntheticSpec spec;
  spec.n_vocab = 1000;
  const std::string path = ::testing::TempDir() + "/synthetic_vocab.gguf";
  ASSERT_TRUE(write_synthetic_model(spec, path).ok());
  Tokenizer t = load(path);
  EXPECT_EQ(t.eos(), 999);
  EXPECT_EQ(t.bos(), 999);
  // Token 256 + 256a + b merges bytes a and b: bytes 0..2 pair up as (0, 1) -> 257, then 2.
  const std::string bytes("\x00\x01\x02", 3);
  auto ids = t.encode(bytes);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(*ids, (std::vector<TokenId>{257, 2}));
  const std::string text = "Hello, w\xC3\xB6rld! \xF0\x9F\x98\x80 123";
  auto enc = t.encode(text);
  ASSERT_TRUE(enc.ok());
  auto dec = t.decode(*enc);
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(*dec, text);
}

}  // namespace
}  // namespace chimera
