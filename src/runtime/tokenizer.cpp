// Tokenizer construction (from TokenizerData or a GGUF file), special-token partitioning,
// encode/decode, and the streaming decoder. Model-specific merge loops: tokenizer_bpe.cpp,
// tokenizer_spm.cpp; regexes: tokenizer_pretokenize.cpp.
#include "runtime/tokenizer.h"

#include <algorithm>
#include <cstdio>

#include "core/log.h"
#include "gguf/gguf_file.h"
#include "runtime/tokenizer_internal.h"

namespace chimera {

using tokenizer_detail::Fragment;

namespace {

// Texts llama.cpp treats as end of turn / end of generation (llama-vocab.cpp), in the order
// used to pick the EOT id when the file names none.
constexpr const char* kEotTexts[] = {
    "<|eot_id|>",      "<|im_end|>", "<|end|>", "<end_of_turn>",         "<|endoftext|>",
    "<|end_of_text|>", "<EOT>",      "_<EOT>",  "<｜end▁of▁sentence｜>", "<end_of_utterance>",
};
constexpr const char* kEomText = "<|eom_id|>";

constexpr const char* kSpaceEscape = "\xe2\x96\x81";  // U+2581, SentencePiece's space

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// Decodes one code point; returns its length (1 for an invalid byte, with cp = the byte).
size_t next_code_point(std::string_view s, size_t pos, uint32_t* cp) {
  uint8_t c = uint8_t(s[pos]);
  size_t n = tokenizer_detail::utf8_len_from_lead(c);
  if (n == 1 || pos + n > s.size()) {
    *cp = c;
    return 1;
  }
  uint32_t v = c & (0xFF >> (n + 1));
  for (size_t i = 1; i < n; ++i) {
    uint8_t cc = uint8_t(s[pos + i]);
    if ((cc & 0xC0) != 0x80) {
      *cp = c;
      return 1;
    }
    v = (v << 6) | (cc & 0x3F);
  }
  *cp = v;
  return n;
}

// GPT-2 byte-level text back to bytes; code points outside the mapping are kept as UTF-8.
std::string byte_level_decode(std::string_view text) {
  std::string out;
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp = 0;
    size_t n = next_code_point(text, pos, &cp);
    int b = tokenizer_detail::unicode_to_byte(cp);
    if (b >= 0) {
      out += char(b);
    } else {
      out.append(text.substr(pos, n));
    }
    pos += n;
  }
  return out;
}

// "<0x0A>" -> 10; -1 if `text` is not of that form.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(text[3]), lo = hex(text[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

void tokenizer_detail::SpecialTrie::insert(std::string_view text, TokenId id) {
  int32_t node = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    uint8_t b = uint8_t(text[i]);
    int32_t* slot = nullptr;
    if (node == 0) {
      slot = &root_children[b];
    } else {
      slot = &children[(uint64_t(node) << 8) | b];
    }
    if (*slot == 0) {
      *slot = int32_t(nodes.size());
      nodes.push_back(Node{});
    }
    node = *slot;
  }
  if (nodes[node].token == kNoToken) nodes[node].token = id;  // duplicates: lowest id wins
}

// ---- construction ----

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<std::string> known_pre_tokenizers() {
  return tokenizer_detail::pre_tokenizer_names();
}

Result<Tokenizer> Tokenizer::create(TokenizerData data) {
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  t.model = data.model;
  if (data.model == "llama") {
    t.kind = TokenizerKind::kSpm;
  } else if (data.model == "gpt2") {
    t.kind = TokenizerKind::kBpe;
  } else if (data.model == "no_vocab" || data.model == "none") {
    return Error(ErrorCode::kUnsupported, "tokenizer.ggml.model = '", data.model,
                 "': the file has no vocabulary");
  } else {
    return Error(
        ErrorCode::kUnsupported, "tokenizer.ggml.model = '", data.model,
        "' is not supported (supported: llama (SentencePiece BPE), gpt2 (byte-level BPE))");
  }
  const size_t n = data.tokens.size();
  if (n == 0) return Error(ErrorCode::kFormat, "tokenizer.ggml.tokens is empty");
  if (n > size_t(INT32_MAX))
    return Error(ErrorCode::kFormat, "tokenizer.ggml.tokens has too many entries (", n, ")");
  if (!data.scores.empty() && data.scores.size() != n)
    return Error(ErrorCode::kFormat, "tokenizer.ggml.scores has ", data.scores.size(),
                 " entries, tokenizer.ggml.tokens has ", n);
  if (!data.token_types.empty() && data.token_types.size() != n)
    return Error(ErrorCode::kFormat, "tokenizer.ggml.token_type has ", data.token_types.size(),
                 " entries, tokenizer.ggml.tokens has ", n);

  t.texts = std::move(data.tokens);
  t.scores = data.scores.empty() ? std::vector<float>(n, 0.0f) : std::move(data.scores);
  t.types.resize(n, TokenType::kNormal);
  for (size_t i = 0; i < data.token_types.size(); ++i) {
    int32_t v = data.token_types[i];
    t.types[i] = (v >= 0 && v <= 6) ? TokenType(v) : TokenType::kUndefined;
  }
  t.text_to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (t.texts[i].empty()) t.texts[i] = StrCat("[EMPTY_", i, "]");  // as llama.cpp
    t.text_to_id[t.texts[i]] = TokenId(i);  // a repeated text maps to its last id, as llama.cpp
  }

  // Model-type defaults (llama-vocab.cpp), then the file's values.
  tokenizer_detail::PreTokenizerSpec spec;
  if (t.kind == TokenizerKind::kSpm) {
    t.bos = 1;
    t.eos = 2;
    t.unk = 0;
    t.add_bos = true;
    t.add_space_prefix = true;
    t.pre = data.pre.empty() ? "default" : data.pre;
  } else {
    CHIMERA_ASSIGN_OR_RETURN(spec, tokenizer_detail::pre_tokenizer_for(data.pre));
    t.pre = data.pre.empty() ? "default" : data.pre;
    t.bos = 11;
    t.eos = 11;
    t.add_bos = spec.add_bos_default;
    t.ignore_merges = spec.ignore_merges;
  }
  auto set_id = [&](const std::optional<uint32_t>& v, TokenId* id, const char* key) {
    if (!v) return;
    if (*v >= n) {
      log(LogLevel::kWarn, "tokenizer: ", key, " = ", *v, " is outside the vocabulary (", n,
          " tokens); ignored");
      return;
    }
    *id = TokenId(*v);
  };
  set_id(data.bos_id, &t.bos, "tokenizer.ggml.bos_token_id");
  set_id(data.eos_id, &t.eos, "tokenizer.ggml.eos_token_id");
  set_id(data.eot_id, &t.eot, "tokenizer.ggml.eot_token_id");
  set_id(data.eom_id, &t.eom, "tokenizer.ggml.eom_token_id");
  set_id(data.unk_id, &t.unk, "tokenizer.ggml.unknown_token_id");
  set_id(data.sep_id, &t.sep, "tokenizer.ggml.seperator_token_id");
  set_id(data.pad_id, &t.pad, "tokenizer.ggml.padding_token_id");
  for (TokenId* id : {&t.bos, &t.eos, &t.unk})
    if (*id >= TokenId(n)) *id = kNoToken;  // a default the vocabulary is too small for
  if (data.add_bos) t.add_bos = *data.add_bos;
  if (data.add_eos) t.add_eos = *data.add_eos;
  if (data.add_space_prefix) t.add_space_prefix = *data.add_space_prefix;
  if (t.add_bos && t.bos == kNoToken) {
    log(LogLevel::kWarn, "tokenizer: add_bos_token is set but there is no BOS token; not added");
    t.add_bos = false;
  }
  if (t.add_eos && t.eos == kNoToken) {
    log(LogLevel::kWarn, "tokenizer: add_eos_token is set but there is no EOS token; not added");
    t.add_eos = false;
  }

  // End-of-generation tokens recognised by text are control tokens whatever the file says.
  auto force_control = [&](TokenId id) {
    if (t.types[id] != TokenType::kControl) t.types[id] = TokenType::kControl;
  };
  for (const char* text : kEotTexts) {
    TokenId id = t.lookup(text);
    if (id == kNoToken) continue;
    if (t.eot == kNoToken) t.eot = id;
    force_control(id);
    t.eog.push_back(id);
  }
  if (TokenId id = t.lookup(kEomText); id != kNoToken) {
    if (t.eom == kNoToken) t.eom = id;
    force_control(id);
    t.eog.push_back(id);
  }
  for (TokenId id : {t.eos, t.eot, t.eom})
    if (id != kNoToken) t.eog.push_back(id);
  std::sort(t.eog.begin(), t.eog.end());
  t.eog.erase(std::unique(t.eog.begin(), t.eog.end()), t.eog.end());

  if (t.kind == TokenizerKind::kBpe) {
    if (data.merges.empty() && n > 256)
      log(LogLevel::kWarn, "tokenizer: byte-level BPE vocabulary without tokenizer.ggml.merges");
    CHIMERA_ASSIGN_OR_RETURN(t.splitter, tokenizer_detail::RegexSplitter::create(spec.regexes));
    const auto& b2u = tokenizer_detail::byte_to_unicode();
    for (int b = 0; b < 256; ++b) t.byte_char_token[b] = t.lookup(b2u[b]);
    t.merges.reserve(data.merges.size());
    std::string joined;
    for (size_t i = 0; i < data.merges.size(); ++i) {
      const std::string& m = data.merges[i];
      size_t sp = m.find(' ', 1);  // split at the first space after the first byte
      if (sp == std::string::npos)
        return Error(ErrorCode::kFormat, "tokenizer.ggml.merges[", i, "] = '", m,
                     "' is not two tokens separated by a space");
      std::string_view left(m.data(), sp), right(m.data() + sp + 1, m.size() - sp - 1);
      TokenId l = t.lookup(left), r = t.lookup(right);
      if (l == kNoToken || r == kNoToken) continue;  // can never apply to vocabulary symbols
      joined.assign(left).append(right);
      t.merges.emplace(tokenizer_detail::pair_key(l, r),
                       tokenizer_detail::MergeInfo{int32_t(i), t.lookup(joined)});
    }
  } else {
    char buf[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
      t.byte_token[b] = t.lookup(buf);
    }
    t.spm_split_at_words = true;
    for (const std::string& text : t.texts) {
      for (size_t p = text.find(kSpaceEscape, 1); p != std::string::npos;
           p = text.find(kSpaceEscape, p + 3)) {
        if (p < 3 || text.compare(p - 3, 3, kSpaceEscape) != 0) t.spm_split_at_words = false;
      }
    }
  }

  // Special tokens: matched longest first, then by id.
  for (size_t i = 0; i < n; ++i)
    if (t.is_special_type(TokenId(i))) t.special_order.push_back(TokenId(i));
  std::stable_sort(t.special_order.begin(), t.special_order.end(),
                   [&](TokenId a, TokenId b) { return t.texts[a].size() > t.texts[b].size(); });
  t.special_priority.assign(n, -1);
  for (size_t k = 0; k < t.special_order.size(); ++k) {
    TokenId id = t.special_order[k];
    t.special_priority[id] = int32_t(k);
    t.special_trie.insert(t.texts[id], id);
  }

  // Pieces (llama.cpp token_to_piece): what each token decodes to.
  t.piece_plain.resize(n);
  t.piece_special.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = t.texts[i];
    std::string piece;
    switch (t.types[i]) {
      case TokenType::kControl:
      case TokenType::kUnknown:
      case TokenType::kUserDefined:
        piece = text;
        break;
      case TokenType::kNormal:
        piece = t.kind == TokenizerKind::kSpm ? replace_all(text, kSpaceEscape, " ")
                                              : byte_level_decode(text);
        break;
      case TokenType::kByte:
        if (t.kind == TokenizerKind::kSpm) {
          int b = parse_byte_token(text);
          piece = b >= 0 ? std::string(1, char(b)) : text;
        }
        break;
      default:  // unused / undefined: nothing
        break;
    }
    bool hidden = t.types[i] == TokenType::kControl || t.types[i] == TokenType::kUnknown;
    t.piece_plain[i] = hidden ? std::string() : piece;
    t.piece_special[i] = std::move(piece);
  }
  return Tokenizer(std::move(impl));
}

Result<TokenizerData> read_tokenizer_data(const GgufFile& file) {
  TokenizerData d;
  if (file.find("tokenizer.ggml.model") == nullptr)
    return Error(ErrorCode::kNotFound, file.path(),
                 ": no tokenizer metadata (tokenizer.ggml.model is missing)");
  CHIMERA_ASSIGN_OR_RETURN(d.model, file.get<std::string>("tokenizer.ggml.model"));
  CHIMERA_ASSIGN_OR_RETURN(d.pre, file.get_or<std::string>("tokenizer.ggml.pre", std::string()));
  if (d.model == "no_vocab" || d.model == "none") return d;
  CHIMERA_ASSIGN_OR_RETURN(auto tokens, file.get_string_array("tokenizer.ggml.tokens"));
  d.tokens.assign(tokens.begin(), tokens.end());
  if (file.find("tokenizer.ggml.scores")) {
    CHIMERA_ASSIGN_OR_RETURN(d.scores, file.get_array<float>("tokenizer.ggml.scores"));
  }
  if (file.find("tokenizer.ggml.token_type")) {
    CHIMERA_ASSIGN_OR_RETURN(d.token_types, file.get_array<int32_t>("tokenizer.ggml.token_type"));
  }
  if (file.find("tokenizer.ggml.merges")) {
    CHIMERA_ASSIGN_OR_RETURN(auto merges, file.get_string_array("tokenizer.ggml.merges"));
    d.merges.assign(merges.begin(), merges.end());
  }
  struct IdKey {
    const char* key;
    std::optional<uint32_t>* dst;
  };
  for (const IdKey& k : {IdKey{"tokenizer.ggml.bos_token_id", &d.bos_id},
                         IdKey{"tokenizer.ggml.eos_token_id", &d.eos_id},
                         IdKey{"tokenizer.ggml.eot_token_id", &d.eot_id},
                         IdKey{"tokenizer.ggml.eom_token_id", &d.eom_id},
                         IdKey{"tokenizer.ggml.unknown_token_id", &d.unk_id},
                         IdKey{"tokenizer.ggml.seperator_token_id", &d.sep_id},
                         IdKey{"tokenizer.ggml.padding_token_id", &d.pad_id}}) {
    CHIMERA_ASSIGN_OR_RETURN(*k.dst, file.get_optional<uint32_t>(k.key));
  }
  CHIMERA_ASSIGN_OR_RETURN(d.add_bos, file.get_optional<bool>("tokenizer.ggml.add_bos_token"));
  CHIMERA_ASSIGN_OR_RETURN(d.add_eos, file.get_optional<bool>("tokenizer.ggml.add_eos_token"));
  CHIMERA_ASSIGN_OR_RETURN(d.add_space_prefix,
                           file.get_optional<bool>("tokenizer.ggml.add_space_prefix"));
  return d;
}

Result<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  CHIMERA_ASSIGN_OR_RETURN(TokenizerData data, read_tokenizer_data(file));
  auto tok = create(std::move(data));
  if (!tok.ok())
    return Status(tok.status().code(), StrCat(file.path(), ": ", tok.status().message()));
  return tok;
}

// ---- encoding ----

std::vector<Fragment> Tokenizer::Impl::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  // Every occurrence (overlapping ones included) of every eligible special token.
  struct Occurrence {
    int32_t priority;
    size_t pos;
  };
  std::vector<Occurrence> occ;
  if (!special_order.empty()) {
    for (size_t p = 0; p < text.size(); ++p) {
      int32_t node = special_trie.root_children[uint8_t(text[p])];
      size_t q = p + 1;
      while (node != 0) {
        TokenId id = special_trie.nodes[node].token;
        if (id != kNoToken && (parse_special || types[id] == TokenType::kUserDefined))
          occ.push_back({special_priority[id], p});
        if (q >= text.size()) break;
        auto it = special_trie.children.find((uint64_t(node) << 8) | uint8_t(text[q]));
        node = it == special_trie.children.end() ? 0 : it->second;
        ++q;
      }
    }
  }
  if (occ.empty()) {
    frags.push_back({0, text.size(), kNoToken});
    return frags;
  }
  // llama.cpp's tokenizer_st_partition takes one special token at a time (in priority order) and
  // claims its non-overlapping occurrences, left to right, that lie wholly in text no earlier
  // token claimed. Same result, without rescanning the text per token.
  std::sort(occ.begin(), occ.end(), [](const Occurrence& a, const Occurrence& b) {
    return a.priority != b.priority ? a.priority < b.priority : a.pos < b.pos;
  });
  std::vector<uint8_t> claimed(text.size(), 0);
  std::vector<Fragment> hits;
  size_t cursor = 0;
  for (size_t k = 0; k < occ.size(); ++k) {
    if (k == 0 || occ[k].priority != occ[k - 1].priority) cursor = 0;
    TokenId id = special_order[occ[k].priority];
    size_t len = texts[id].size();
    size_t p = occ[k].pos;
    if (p < cursor) continue;
    if (std::find(claimed.begin() + p, claimed.begin() + p + len, 1) != claimed.begin() + p + len)
      continue;
    std::fill(claimed.begin() + p, claimed.begin() + p + len, 1);
    hits.push_back({p, len, id});
    cursor = p + len;
  }
  std::sort(hits.begin(), hits.end(),
            [](const Fragment& a, const Fragment& b) { return a.offset < b.offset; });
  size_t pos = 0;
  for (const Fragment& h : hits) {
    if (h.offset > pos) frags.push_back({pos, h.offset - pos, kNoToken});
    frags.push_back(h);
    pos = h.offset + h.length;
  }
  if (pos < text.size()) frags.push_back({pos, text.size() - pos, kNoToken});
  return frags;
}

Result<std::vector<TokenId>> Tokenizer::encode(std::string_view text, EncodeOptions opts) const {
  const Impl& t = *impl_;
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  if (opts.add_special && t.add_bos) out.push_back(t.bos);
  std::vector<Fragment> frags = t.partition(text, opts.parse_special);
  if (t.kind == TokenizerKind::kSpm) {
    // The space prefix goes at the start and after every special token (llama.cpp, and HF
    // "legacy" Llama tokenizers).
    bool prev_special = true;
    std::string buf;
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      buf.clear();
      if (t.add_space_prefix && prev_special) buf = " ";
      buf.append(text.substr(f.offset, f.length));
      t.encode_spm(replace_all(buf, " ", kSpaceEscape), &out);
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
      } else {
        CHIMERA_RETURN_IF_ERROR(t.encode_bpe(text.substr(f.offset, f.length), &out));
      }
    }
  }
  if (opts.add_special && t.add_eos) out.push_back(t.eos);
  return out;
}

// ---- decoding ----

const std::string& Tokenizer::piece(TokenId id, bool special) const {
  CHIMERA_CHECK(valid(id), "token id ", id, " outside the vocabulary of ", n_tokens());
  return special ? impl_->piece_special[id] : impl_->piece_plain[id];
}

Result<std::string> Tokenizer::decode(const std::vector<TokenId>& ids, DecodeOptions opts) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (!valid(ids[i]))
      return Error(ErrorCode::kInvalidArgument, "decode: token ", i, " has id ", ids[i],
                   ", outside the vocabulary (", n_tokens(), " tokens)");
  size_t strip_at = ids.size();
  if (opts.remove_space_prefix && impl_->kind == TokenizerKind::kSpm && impl_->add_space_prefix) {
    strip_at = 0;
    while (strip_at < ids.size() && ids[strip_at] == impl_->bos) ++strip_at;
  }
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& p = piece(ids[i], opts.special);
    if (i == strip_at && !p.empty() && p[0] == ' ') {
      out.append(p, 1, std::string::npos);
    } else {
      out += p;
    }
  }
  return out;
}

size_t utf8_complete_prefix(std::string_view bytes) {
  const size_t n = bytes.size();
  // Find the last byte that is not a continuation byte, at most 4 back.
  for (size_t k = 1; k <= 4 && k <= n; ++k) {
    uint8_t c = uint8_t(bytes[n - k]);
    if ((c & 0xC0) == 0x80) continue;
    size_t need = (c >= 0xC2 && c <= 0xDF)   ? 2
                  : (c >= 0xE0 && c <= 0xEF) ? 3
                  : (c >= 0xF0 && c <= 0xF4) ? 4
                                             : 1;
    return k < need ? n - k : n;  // an incomplete sequence waits for its continuation
  }
  return n;
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool at_start, bool special)
    : tok_(&tokenizer), at_start_(at_start), special_(special) {}

Result<std::string> StreamDecoder::push(TokenId id) {
  if (!tok_->valid(id))
    return Error(ErrorCode::kInvalidArgument, "stream decode: token id ", id,
                 " outside the vocabulary (", tok_->n_tokens(), " tokens)");
  std::string_view p = tok_->piece(id, special_);
  if (at_start_ && id != tok_->bos()) {
    if (tok_->kind() == TokenizerKind::kSpm && tok_->add_space_prefix() && !p.empty() &&
        p[0] == ' ')
      p.remove_prefix(1);
    at_start_ = false;
  }
  pending_.append(p);
  size_t n = utf8_complete_prefix(pending_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

// ---- accessors ----

TokenizerKind Tokenizer::kind() const {
  return impl_->kind;
}
const std::string& Tokenizer::model_name() const {
  return impl_->model;
}
const std::string& Tokenizer::pre() const {
  return impl_->pre;
}
int32_t Tokenizer::n_tokens() const {
  return int32_t(impl_->texts.size());
}
const std::string& Tokenizer::token_text(TokenId id) const {
  CHIMERA_CHECK(valid(id), "token id ", id);
  return impl_->texts[id];
}
TokenType Tokenizer::token_type(TokenId id) const {
  CHIMERA_CHECK(valid(id), "token id ", id);
  return impl_->types[id];
}
float Tokenizer::token_score(TokenId id) const {
  CHIMERA_CHECK(valid(id), "token id ", id);
  return impl_->scores[id];
}
TokenId Tokenizer::find_token(std::string_view text) const {
  return impl_->lookup(text);
}
TokenId Tokenizer::bos() const {
  return impl_->bos;
}
TokenId Tokenizer::eos() const {
  return impl_->eos;
}
TokenId Tokenizer::eot() const {
  return impl_->eot;
}
TokenId Tokenizer::eom() const {
  return impl_->eom;
}
TokenId Tokenizer::unk() const {
  return impl_->unk;
}
TokenId Tokenizer::pad() const {
  return impl_->pad;
}
TokenId Tokenizer::sep() const {
  return impl_->sep;
}
bool Tokenizer::add_bos() const {
  return impl_->add_bos;
}
bool Tokenizer::add_eos() const {
  return impl_->add_eos;
}
bool Tokenizer::add_space_prefix() const {
  return impl_->add_space_prefix;
}
bool Tokenizer::is_eog(TokenId id) const {
  return std::binary_search(impl_->eog.begin(), impl_->eog.end(), id);
}
const std::vector<TokenId>& Tokenizer::eog_tokens() const {
  return impl_->eog;
}

}  // namespace chimera
