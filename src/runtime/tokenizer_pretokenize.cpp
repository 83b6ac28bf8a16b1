// Pre-tokenization for byte-level BPE: the regexes of each tokenizer.ggml.pre family, run with
// PCRE2 (UTF + UCP, JIT when available), and the GPT-2 byte <-> unicode mapping.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "gguf/byte_level.h"
#include "runtime/tokenizer_internal.h"

namespace chimera {
namespace tokenizer_detail {
namespace {

// The regexes below are the ones of the Hugging Face tokenizer.json files of each family, as
// listed in shared/spec/ARCHITECTURES.md section 7 (case-insensitive contractions spelled out).
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen3.5: as Qwen2, with combining marks \p{M} part of words and not of punctuation runs.
constexpr const char* kQwen35 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kCjk = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
// DeepSeek LLM's explicit letter ranges (its tokenizer.json; cased letters of an older Unicode),
// not \p{L}; written as code points because several are canonical singletons that editors and
// NFC normalisation silently replace (U+1FD3, U+2126, U+212A, ...).
constexpr const char* kDeepseekLetters =
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"
    "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}"
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}"
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+";
constexpr const char* kDeepseekPunct =
    R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";
constexpr const char* kDeepseek3Words =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Family {
  const char* canonical;
  std::vector<const char*> names;
  std::vector<const char*> regexes;
  bool ignore_merges;
  bool add_bos_default;
};

const std::vector<Family>& families() {
  static const std::vector<Family> kFamilies = {
      {"default",
       {"default"},
       {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"},
       false,
       false},
      {"llama3",
       {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "lfm2", "pixtral"},
       {kLlama3},
       true,
       true},
      {"dbrx", {"dbrx", "smaug-bpe"}, {kLlama3}, false, false},
      {"qwen2", {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"}, {kQwen2}, false, false},
      {"qwen35", {"qwen35"}, {kQwen35}, false, false},
      {"gpt-2",
       {"gpt-2", "phi-2", "mpt", "olmo", "jais", "granite-docling", "roberta-bpe", "gigachat",
        "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code"},
       {kGpt2},
       false,
       false},
      {"starcoder",
       {"starcoder", "refact", "smollm", "command-r", "codeshell", "exaone", "minerva-7b"},
       {R"(\p{N})", kGpt2},
       false,
       false},
      {"falcon", {"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}, false, false},
      {"deepseek-llm",
       {"deepseek-llm"},
       {"[\\r\\n]", kDeepseekLetters, kDeepseekPunct, "\\s+$", kCjk, R"(\p{N}+)"},
       false,
       false},
      {"deepseek-coder",
       {"deepseek-coder"},
       {"[\\r\\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kCjk, R"(\p{N})"},
       false,
       false},
      {"deepseek-v3",
       {"deepseek-v3"},
       {R"(\p{N}{1,3})", R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)",
        kDeepseek3Words},
       false,
       false},
  };
  return kFamilies;
}

}  // namespace

Result<PreTokenizerSpec> pre_tokenizer_for(std::string_view name) {
  if (name.empty()) name = "default";
  for (const Family& f : families()) {
    for (const char* n : f.names) {
      if (name == n) {
        PreTokenizerSpec spec;
        spec.canonical = f.canonical;
        spec.regexes.assign(f.regexes.begin(), f.regexes.end());
        spec.ignore_merges = f.ignore_merges;
        spec.add_bos_default = f.add_bos_default;
        return spec;
      }
    }
  }
  std::string known;
  for (const std::string& n : pre_tokenizer_names()) known += (known.empty() ? "" : ", ") + n;
  return Error(ErrorCode::kUnsupported, "unknown pre-tokenizer tokenizer.ggml.pre = '", name,
               "'; known: ", known);
}

std::vector<std::string> pre_tokenizer_names() {
  std::vector<std::string> names;
  for (const Family& f : families())
    for (const char* n : f.names) names.emplace_back(n);
  std::sort(names.begin(), names.end());
  return names;
}

// ---- PCRE2 splitter ----

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  std::string pattern;
  ~Compiled() {
    if (code) pcre2_code_free(code);
  }
};

RegexSplitter::~RegexSplitter() = default;

Result<std::shared_ptr<const RegexSplitter>> RegexSplitter::create(
    const std::vector<std::string>& patterns) {
  auto splitter = std::shared_ptr<RegexSplitter>(new RegexSplitter());
  for (const std::string& p : patterns) {
    auto c = std::make_unique<Compiled>();
    c->pattern = p;
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // MATCH_INVALID_UTF: arbitrary bytes are allowed in the subject; invalid sequences never match.
    c->code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
    if (c->code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return Error(ErrorCode::kInternal, "pre-tokenizer regex '", p, "' does not compile at ",
                   err_off, ": ", reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(c->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if absent
    splitter->regexes_.push_back(std::move(c));
  }
  return std::shared_ptr<const RegexSplitter>(std::move(splitter));
}

namespace {

// Per-call PCRE2 resources (match data and a JIT stack big enough for long pieces).
struct MatchResources {
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_data* md = nullptr;
  MatchResources() {
    mctx = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (mctx && jit_stack) pcre2_jit_stack_assign(mctx, nullptr, jit_stack);
    md = pcre2_match_data_create(4, nullptr);
  }
  ~MatchResources() {
    if (md) pcre2_match_data_free(md);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    if (mctx) pcre2_match_context_free(mctx);
  }
  bool ok() const { return mctx && md; }
};

// Bytes to step over when an empty match must be skipped: one (possibly invalid) character.
size_t char_step(std::string_view s, size_t pos) {
  size_t n = utf8_len_from_lead(static_cast<uint8_t>(s[pos]));
  size_t i = 1;
  while (i < n && pos + i < s.size() && (static_cast<uint8_t>(s[pos + i]) & 0xC0) == 0x80) ++i;
  return i;
}

}  // namespace

Status RegexSplitter::split(std::string_view text, std::vector<Span>* pieces) const {
  pieces->clear();
  if (text.empty()) return Status::Ok();
  pieces->push_back({0, text.size()});
  MatchResources res;
  if (!res.ok()) return Error(ErrorCode::kOutOfMemory, "pre-tokenizer: PCRE2 allocation failed");
  std::vector<Span> next;
  for (const auto& re : regexes_) {
    next.clear();
    next.reserve(pieces->size() * 2);
    for (const Span& piece : *pieces) {
      auto subject = reinterpret_cast<PCRE2_SPTR>(text.data() + piece.offset);
      std::string_view sv = text.substr(piece.offset, piece.length);
      size_t pos = 0;    // end of the last emitted span
      size_t start = 0;  // where the next search starts
      while (start < piece.length) {
        int rc = pcre2_match(re->code, subject, piece.length, start, 0, res.md, res.mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof(msg));
          return Error(ErrorCode::kInvalidArgument, "pre-tokenizer regex '", re->pattern,
                       "' failed on the text at byte ", piece.offset + start, ": ",
                       reinterpret_cast<const char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(res.md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) {  // empty match: not a piece; search again one character further
          start = s + char_step(sv, s);
          continue;
        }
        if (s > pos) next.push_back({piece.offset + pos, s - pos});
        next.push_back({piece.offset + s, e - s});
        pos = start = e;
      }
      if (pos < piece.length) next.push_back({piece.offset + pos, piece.length - pos});
    }
    pieces->swap(next);
  }
  return Status::Ok();
}

// ---- byte-level mapping (gguf/byte_level.h) ----

const std::array<std::string, 256>& byte_to_unicode() {
  return gpt2_byte_to_unicode();
}

int unicode_to_byte(uint32_t cp) {
  return gpt2_unicode_to_byte(cp);
}

}  // namespace tokenizer_detail
}  // namespace chimera
