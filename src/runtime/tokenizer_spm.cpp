// SentencePiece-style BPE (tokenizer.ggml.model = "llama"), as llama.cpp's llm_tokenizer_spm:
// start from UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is the
// vocabulary entry of highest score (ties: leftmost), then emit each symbol as its token or, when
// the vocabulary lacks it, as <0xXX> byte tokens.
#include <algorithm>

#include "runtime/tokenizer_internal.h"

namespace chimera {
namespace {

struct Symbol {
  uint32_t offset;
  uint32_t length;  // 0 once merged into its left neighbour
  int32_t prev, next;
};

struct Bigram {
  float score;
  int32_t left, right;
  uint32_t length;  // combined length when queued; a mismatch later means it is stale
};

// Heap top: highest score, then leftmost.
bool heap_less(const Bigram& a, const Bigram& b) {
  return a.score < b.score || (a.score == b.score && a.left > b.left);
}

// One independent segment of the text (see encode_spm).
void encode_spm_segment(const Tokenizer::Impl& t, std::string_view text,
                        std::vector<TokenId>* out) {
  std::vector<Symbol> syms;
  for (size_t off = 0; off < text.size();) {
    size_t n =
        std::min(tokenizer_detail::utf8_len_from_lead(uint8_t(text[off])), text.size() - off);
    int32_t idx = int32_t(syms.size());
    syms.push_back({uint32_t(off), uint32_t(n), idx - 1, off + n < text.size() ? idx + 1 : -1});
    off += n;
  }
  if (syms.empty()) return;

  std::vector<Bigram> heap;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = syms[left];
    const Symbol& r = syms[right];
    TokenId id = t.lookup(text.substr(l.offset, l.length + r.length));
    if (id == kNoToken) return;
    heap.push_back({t.scores[id], left, right, l.length + r.length});
    std::push_heap(heap.begin(), heap.end(), heap_less);
  };
  for (size_t i = 1; i < syms.size(); ++i) try_add(int32_t(i - 1), int32_t(i));

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), heap_less);
    Bigram bg = heap.back();
    heap.pop_back();
    Symbol& l = syms[bg.left];
    Symbol& r = syms[bg.right];
    if (l.length == 0 || r.length == 0 || l.length + r.length != bg.length) continue;
    l.length += r.length;
    r.length = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }

  for (int32_t i = 0; i != -1; i = syms[i].next) {
    std::string_view sv = text.substr(syms[i].offset, syms[i].length);
    TokenId id = t.lookup(sv);
    if (id != kNoToken) {
      out->push_back(id);
      continue;
    }
    // Merged symbols are always vocabulary entries, so this is a single character: byte fallback.
    for (char c : sv) {
      uint8_t b = static_cast<uint8_t>(c);
      TokenId bt = t.byte_token[b];
      if (bt == kNoToken) bt = t.lookup(std::string_view(&c, 1));
      if (bt == kNoToken) bt = t.unk;
      if (bt != kNoToken) out->push_back(bt);
    }
  }
}

}  // namespace

void Tokenizer::Impl::encode_spm(std::string_view text, std::vector<TokenId>* out) const {
  if (!spm_split_at_words) {
    encode_spm_segment(*this, text, out);
    return;
  }
  // No vocabulary entry contains a character other than U+2581 followed by U+2581, so no symbol
  // can ever span such a boundary: the segments merge independently, with the same result as
  // one global merge loop, and a much smaller heap on long texts.
  constexpr std::string_view kSpace = "\xe2\x96\x81";
  size_t start = 0;
  size_t pos = text.find(kSpace, 1);
  while (pos != std::string_view::npos) {
    bool after_space = pos >= 3 && text.substr(pos - 3, 3) == kSpace;
    if (!after_space) {
      encode_spm_segment(*this, text.substr(start, pos - start), out);
      start = pos;
    }
    pos = text.find(kSpace, pos + 3);
  }
  encode_spm_segment(*this, text.substr(start), out);
}

}  // namespace chimera
