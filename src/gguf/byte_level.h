// The GPT-2 byte-level alphabet that `gpt2`-model vocabularies in GGUF files are written in:
// every byte is a printable code point (printable bytes map to themselves, the others to U+0100,
// U+0101, ... in byte order; space becomes U+0120 'Ġ'). Tokenizers decode token text with it,
// and writers of synthetic vocabularies encode with it.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace chimera {

// UTF-8 text of each byte's code point.
const std::array<std::string, 256>& gpt2_byte_to_unicode();
// Inverse: the byte whose image is code point cp, or -1.
int gpt2_unicode_to_byte(uint32_t cp);

}  // namespace chimera
