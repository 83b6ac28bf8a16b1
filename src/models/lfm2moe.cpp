// LFM2-MoE (lfm2moe, Liquid): LFM2's short-conv and attention layers (lfm2.cpp); the first
// leading_dense_block_count layers keep a dense SwiGLU FFN, the rest route each token to
// expert_used_count of expert_count SwiGLU experts: sigmoid scores, top-k chosen on score +
// exp_probs_b, weights the chosen unbiased scores renormalised to sum 1.
#include "models/loader_util.h"

namespace chimera {

Status load_lfm2_family(Model& m, const char* arch, bool moe);  // lfm2.cpp

Status load_lfm2moe(Model& m) {
  return load_lfm2_family(m, "lfm2moe", true);
}

}  // namespace chimera
