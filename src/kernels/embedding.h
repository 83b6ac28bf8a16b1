// Token embedding lookup: the selected rows of token_embd, dequantized to F32 (llama.cpp
// get_rows) through the gguf layer's reference dequantizers (gguf/quants.h). Types: every type
// matmul supports (supported_type_names()).
#pragma once

#include <cstdint>

#include "core/status.h"
#include "gguf/types.h"

namespace chimera {

// table: n_vocab rows of n_embd elements of `type` (rows contiguous, row_bytes(type, n_embd)
// each). out: n_tokens rows of n_embd F32 (row stride out_stride floats). Every token id is
// checked against n_vocab before anything is written. Errors: unsupported type, n_embd not a
// multiple of the type's block size, token id out of range (names the position and id).
Status embedding_lookup(GgmlType type, const void* table, int64_t n_embd, int64_t n_vocab,
                        const int32_t* tokens, int64_t n_tokens, float* out, int64_t out_stride);

}  // namespace chimera
