// Tokenizers built from GGUF metadata (tokenizer.ggml.*, shared/spec/ARCHITECTURES.md section 7):
//   * "gpt2": byte-level BPE; the text is first split by the pre-tokenizer regexes named by
//     tokenizer.ggml.pre (PCRE2, UTF + UCP), then each piece is byte-encoded and merged by rank.
//   * "llama": SentencePiece-style BPE (merges chosen by token score), spaces escaped as U+2581,
//     characters missing from the vocabulary emitted as <0xXX> byte tokens.
// Behaviour follows llama.cpp's llama-vocab, which reproduces the Hugging Face tokenizers on the
// shared test vectors (shared/data/vocab). A Tokenizer is immutable after creation: encode/decode
// are const and safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace chimera {

class GgufFile;

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// tokenizer.ggml.token_type values (llama.h).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class TokenizerKind {
  kSpm,  // tokenizer.ggml.model = "llama"
  kBpe,  // tokenizer.ggml.model = "gpt2"
};

// Everything a tokenizer is built from: the tokenizer.ggml.* metadata as plain values, so tests
// can build small vocabularies in memory. Optional fields are "absent from the file".
struct TokenizerData {
  std::string model;  // "llama" or "gpt2"
  std::string pre;    // tokenizer.ggml.pre; "" when absent
  std::vector<std::string> tokens;
  std::vector<float> scores;         // empty: all 0
  std::vector<int32_t> token_types;  // empty: all kNormal
  std::vector<std::string> merges;   // "left right", rank = index (BPE only)
  std::optional<uint32_t> bos_id, eos_id, eot_id, eom_id, unk_id, sep_id, pad_id;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
};

// Reads the tokenizer.ggml.* keys; errors name the key (missing model or tokens, wrong types).
Result<TokenizerData> read_tokenizer_data(const GgufFile& file);

// tokenizer.ggml.pre values this build understands (for error messages and --help).
std::vector<std::string> known_pre_tokenizers();

struct EncodeOptions {
  // Add BOS / EOS as the vocabulary asks (tokenizer.ggml.add_bos_token / add_eos_token, else the
  // model-type default).
  bool add_special = true;
  // Recognise control and unknown tokens written literally in the text ("<|im_start|>").
  // User-defined tokens are always recognised, as in Hugging Face tokenizers.
  bool parse_special = false;
};

struct DecodeOptions {
  // Render control / unknown tokens as their text; otherwise they produce nothing.
  bool special = false;
  // SentencePiece vocabularies with add_space_prefix: drop the space the encoder put in front of
  // the first token (after any leading BOS), so decode(encode(text)) == text.
  bool remove_space_prefix = true;
};

class Tokenizer {
 public:
  static Result<Tokenizer> create(TokenizerData data);
  static Result<Tokenizer> from_gguf(const GgufFile& file);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Fails only when the regex engine gives up (match limits on pathological input).
  Result<std::vector<TokenId>> encode(std::string_view text, EncodeOptions opts = {}) const;

  // Concatenated pieces; an id outside [0, n_tokens) is an error naming its position.
  Result<std::string> decode(const std::vector<TokenId>& ids, DecodeOptions opts = {}) const;

  // The bytes one token stands for (no space-prefix removal). `id` must be valid.
  const std::string& piece(TokenId id, bool special = false) const;

  TokenizerKind kind() const;
  const std::string& model_name() const;  // "llama" / "gpt2"
  const std::string& pre() const;         // pre-tokenizer name as resolved ("default" if absent)
  int32_t n_tokens() const;
  bool valid(TokenId id) const { return id >= 0 && id < n_tokens(); }
  const std::string& token_text(TokenId id) const;
  TokenType token_type(TokenId id) const;
  float token_score(TokenId id) const;
  TokenId find_token(std::string_view text) const;  // kNoToken when absent

  TokenId bos() const;
  TokenId eos() const;
  TokenId eot() const;
  TokenId eom() const;
  TokenId unk() const;
  TokenId pad() const;
  TokenId sep() const;
  bool add_bos() const;
  bool add_eos() const;
  bool add_space_prefix() const;
  // End of generation: EOS, EOT, EOM and the end-of-turn tokens recognised by their text.
  bool is_eog(TokenId id) const;
  const std::vector<TokenId>& eog_tokens() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of generated tokens into text, holding back an incomplete UTF-8 sequence until
// the token that completes it arrives. Bytes that can never form valid UTF-8 are passed through,
// so the concatenated output of push() and flush() is exactly decode() of the same tokens.
class StreamDecoder {
 public:
  // `at_start`: the first token begins the text (a SentencePiece space prefix is removed).
  explicit StreamDecoder(const Tokenizer& tokenizer, bool at_start = true, bool special = false);

  // Text that became complete with this token (may be empty).
  Result<std::string> push(TokenId id);
  // Whatever is still held back (an incomplete sequence at the end of the stream).
  std::string flush();

 private:
  const Tokenizer* tok_;
  bool at_start_;
  bool special_;
  std::string pending_;
};

// Length of the prefix of `bytes` that does not end inside an incomplete (but so far valid) UTF-8
// sequence.
size_t utf8_complete_prefix(std::string_view bytes);

}  // namespace chimera
