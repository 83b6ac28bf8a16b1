// Internals shared by tokenizer*.cpp: the Tokenizer's state, the regex pre-tokenizer, the BPE and
// SentencePiece merge loops, the GPT-2 byte <-> unicode mapping. Not part of the public API.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer.h"

namespace chimera {
namespace tokenizer_detail {

// A byte range of the input text.
struct Span {
  size_t offset;
  size_t length;
};

// A sequence of PCRE2 regexes applied one after another: each splits the pieces the previous one
// produced into matches and the unmatched spans between them (both kept), as Hugging Face's
// Split(behavior = Isolated) pre-tokenizers and llama.cpp's unicode_regex_split do.
class RegexSplitter {
 public:
  static Result<std::shared_ptr<const RegexSplitter>> create(
      const std::vector<std::string>& patterns);
  ~RegexSplitter();
  // Splits `text` (any bytes; invalid UTF-8 never matches and stays in unmatched spans).
  Status split(std::string_view text, std::vector<Span>* pieces) const;

 private:
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> regexes_;
};

// The pre-tokenizer of a tokenizer.ggml.pre value.
struct PreTokenizerSpec {
  std::string canonical;  // the family name ("llama3", "gpt-2", ...)
  std::vector<std::string> regexes;
  bool ignore_merges = false;    // a piece that is a whole vocabulary entry is emitted as is
  bool add_bos_default = false;  // default for tokenizer.ggml.add_bos_token
};
// Unknown names give an error listing the known ones.
Result<PreTokenizerSpec> pre_tokenizer_for(std::string_view name);
std::vector<std::string> pre_tokenizer_names();

// GPT-2 byte-level mapping: every byte is a printable code point (space -> U+0120 'Ġ').
const std::array<std::string, 256>& byte_to_unicode();
// Inverse: -1 for code points that are not the image of a byte.
int unicode_to_byte(uint32_t cp);

// Number of bytes of the UTF-8 sequence that starts with `lead` (1 for continuation bytes), as
// llama.cpp's unicode_len_utf8.
inline size_t utf8_len_from_lead(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

struct MergeInfo {
  int32_t rank;
  TokenId result;  // id of the concatenation, kNoToken when the vocabulary lacks it
};

inline uint64_t pair_key(TokenId left, TokenId right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

// Special-token matcher: a byte trie over the texts of control / user-defined / unknown tokens.
struct SpecialTrie {
  struct Node {
    TokenId token = kNoToken;  // a special token ends here
  };
  std::vector<Node> nodes{Node{}};
  std::array<int32_t, 256> root_children{};        // 0 = none (node 0 is the root)
  std::unordered_map<uint64_t, int32_t> children;  // (node << 8 | byte) -> node, below the root
  void insert(std::string_view text, TokenId id);
};

// A piece of input after special-token partitioning: raw text, or a recognised special token.
struct Fragment {
  size_t offset = 0;
  size_t length = 0;
  TokenId token = kNoToken;  // != kNoToken: a special token
};

}  // namespace tokenizer_detail

struct Tokenizer::Impl {
  TokenizerKind kind = TokenizerKind::kBpe;
  std::string model;
  std::string pre;
  std::vector<std::string> texts;
  std::vector<float> scores;
  std::vector<TokenType> types;
  // Views into `texts` (stable: texts is never resized after construction).
  std::unordered_map<std::string_view, TokenId> text_to_id;

  TokenId bos = kNoToken, eos = kNoToken, eot = kNoToken, eom = kNoToken, unk = kNoToken,
          sep = kNoToken, pad = kNoToken;
  bool add_bos = false, add_eos = false, add_space_prefix = false, ignore_merges = false;
  std::vector<TokenId> eog;

  // BPE
  std::unordered_map<uint64_t, tokenizer_detail::MergeInfo> merges;
  std::shared_ptr<const tokenizer_detail::RegexSplitter> splitter;
  std::array<TokenId, 256> byte_char_token{};  // id of the byte-level character of each byte

  // SPM: <0xXX> tokens (kNoToken when absent)
  std::array<TokenId, 256> byte_token{};
  // SPM: no token has U+2581 after another character, so text may be merged word by word.
  bool spm_split_at_words = false;

  // Special tokens in matching priority (longest text first, then lowest id).
  tokenizer_detail::SpecialTrie special_trie;
  std::vector<int32_t> special_priority;  // by token id: position in priority order, -1 if none
  std::vector<TokenId> special_order;

  std::vector<std::string> piece_plain;    // token_to_piece(special = false)
  std::vector<std::string> piece_special;  // token_to_piece(special = true)

  TokenId lookup(std::string_view s) const {
    auto it = text_to_id.find(s);
    return it == text_to_id.end() ? kNoToken : it->second;
  }
  bool is_special_type(TokenId id) const {
    TokenType t = types[id];
    return t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown;
  }

  // Splits text at special tokens (llama.cpp tokenizer_st_partition semantics).
  std::vector<tokenizer_detail::Fragment> partition(std::string_view text,
                                                    bool parse_special) const;
  // Appends the tokens of a raw-text fragment.
  Status encode_bpe(std::string_view text, std::vector<TokenId>* out) const;
  void encode_spm(std::string_view escaped_text, std::vector<TokenId>* out) const;
};

}  // namespace chimera
