// Byte-level BPE (tokenizer.ggml.model = "gpt2"): pre-tokenize with the family's regexes, map
// each piece's bytes to GPT-2 code points, then repeatedly merge the adjacent pair of lowest
// rank (ties: leftmost). A heap with lazy invalidation keeps long words O(n log n).
#include <algorithm>

#include "runtime/tokenizer_internal.h"

namespace chimera {

using tokenizer_detail::byte_to_unicode;
using tokenizer_detail::pair_key;
using tokenizer_detail::Span;

namespace {

struct Symbol {
  uint32_t offset;  // in the byte-mapped word
  uint32_t length;  // 0 once merged into its left neighbour
  int32_t prev, next;
  TokenId id;  // kNoToken: not a vocabulary entry
};

struct Bigram {
  int32_t rank;
  int32_t left, right;
  uint32_t length;  // combined length when queued; a mismatch later means it is stale
};

// std::*_heap keep the "largest" on top: make that the lowest rank, then the leftmost.
bool heap_less(const Bigram& a, const Bigram& b) {
  return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
}

}  // namespace

Status Tokenizer::Impl::encode_bpe(std::string_view text, std::vector<TokenId>* out) const {
  std::vector<Span> words;
  CHIMERA_RETURN_IF_ERROR(splitter->split(text, &words));
  const auto& b2u = byte_to_unicode();

  std::string mapped;
  std::vector<Symbol> syms;
  std::vector<Bigram> heap;

  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = syms[left];
    const Symbol& r = syms[right];
    if (l.id == kNoToken || r.id == kNoToken) return;
    auto it = merges.find(pair_key(l.id, r.id));
    if (it == merges.end()) return;
    heap.push_back({it->second.rank, left, right, l.length + r.length});
    std::push_heap(heap.begin(), heap.end(), heap_less);
  };

  for (const Span& w : words) {
    std::string_view word = text.substr(w.offset, w.length);
    mapped.clear();
    for (char c : word) mapped += b2u[static_cast<uint8_t>(c)];

    if (ignore_merges) {
      TokenId whole = lookup(mapped);
      if (whole != kNoToken) {
        out->push_back(whole);
        continue;
      }
    }

    syms.clear();
    uint32_t off = 0;
    for (size_t i = 0; i < word.size(); ++i) {
      uint8_t b = static_cast<uint8_t>(word[i]);
      uint32_t len = static_cast<uint32_t>(b2u[b].size());
      int32_t next = i + 1 < word.size() ? int32_t(i + 1) : -1;
      syms.push_back({off, len, int32_t(i) - 1, next, byte_char_token[b]});
      off += len;
    }
    heap.clear();
    for (size_t i = 1; i < syms.size(); ++i) try_add(int32_t(i - 1), int32_t(i));

    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), heap_less);
      Bigram bg = heap.back();
      heap.pop_back();
      Symbol& l = syms[bg.left];
      Symbol& r = syms[bg.right];
      // Symbols only grow, so an unchanged combined length means the pair is still current.
      if (l.length == 0 || r.length == 0 || l.length + r.length != bg.length) continue;
      l.length += r.length;
      l.id = merges.at(pair_key(l.id, r.id)).result;
      r.length = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = bg.left;
      try_add(l.prev, bg.left);
      try_add(bg.left, l.next);
    }

    for (int32_t i = 0; i != -1 && !syms.empty(); i = syms[i].next) {
      const Symbol& s = syms[i];
      if (s.id != kNoToken) {
        out->push_back(s.id);
        continue;
      }
      // Not in the vocabulary (a byte character the vocabulary lacks, or a merge whose result
      // it lacks): emit character by character, UNK for characters it lacks too.
      std::string_view sv(mapped.data() + s.offset, s.length);
      for (size_t p = 0; p < sv.size();) {
        size_t n = std::min(tokenizer_detail::utf8_len_from_lead(uint8_t(sv[p])), sv.size() - p);
        TokenId id = lookup(sv.substr(p, n));
        if (id == kNoToken) id = unk;
        if (id != kNoToken) out->push_back(id);
        p += n;
      }
    }
  }
  return Status::Ok();
}

}  // namespace chimera
