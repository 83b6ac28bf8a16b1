#include "kernels/embedding.h"

#include "gguf/quants.h"

namespace chimera {

Status embedding_lookup(GgmlType type, const void* table, int64_t n_embd, int64_t n_vocab,
                        const int32_t* tokens, int64_t n_tokens, float* out, int64_t out_stride) {
  if (!can_dequantize(type))
    return Error(ErrorCode::kUnsupported, "embedding_lookup: tensor type ", type_name(type),
                 " (supported: ", supported_type_names(), ")");
  const int64_t block = type_traits(type).block_size;
  if (n_embd < 1 || n_embd % block != 0)
    return Error(ErrorCode::kInvalidArgument, "embedding_lookup: n_embd ", n_embd,
                 " is not a positive multiple of the ", type_name(type), " block size ", block);
  if (n_tokens < 0 || out_stride < n_embd)
    return Error(ErrorCode::kInvalidArgument, "embedding_lookup: n_tokens ", n_tokens,
                 " / out stride ", out_stride, " invalid for n_embd ", n_embd);
  for (int64_t t = 0; t < n_tokens; ++t)
    if (tokens[t] < 0 || tokens[t] >= n_vocab)
      return Error(ErrorCode::kInvalidArgument, "embedding_lookup: token ", tokens[t],
                   " at position ", t, " is outside the vocabulary [0, ", n_vocab, ")");
  const uint64_t rb = row_bytes(type, static_cast<uint64_t>(n_embd));
  for (int64_t t = 0; t < n_tokens; ++t)
    CHIMERA_CHECK(dequantize_row(type, static_cast<const uint8_t*>(table) + rb * tokens[t],
                                 out + t * out_stride, n_embd)
                      .ok(),
                  "validated above");
  return Status::Ok();
}

}  // namespace chimera
