#include "gguf/byte_level.h"

namespace chimera {
namespace {

struct ByteMaps {
  std::array<std::string, 256> to_unicode;
  std::array<int32_t, 324> from_unicode;  // code points 0..323 cover every image
};

// Code points below U+0800 only (the images stop at U+0143).
void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  }
}

const ByteMaps& byte_maps() {
  static const ByteMaps maps = [] {
    ByteMaps m;
    m.from_unicode.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      const uint32_t cp = printable ? b : next++;
      append_utf8(m.to_unicode[b], cp);
      m.from_unicode[cp] = static_cast<int32_t>(b);
    }
    return m;
  }();
  return maps;
}

}  // namespace

const std::array<std::string, 256>& gpt2_byte_to_unicode() {
  return byte_maps().to_unicode;
}

int gpt2_unicode_to_byte(uint32_t cp) {
  return cp < byte_maps().from_unicode.size() ? byte_maps().from_unicode[cp] : -1;
}

}  // namespace chimera
