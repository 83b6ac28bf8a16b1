// Model-level quantization: which type each tensor of a GGUF gets, and the conversion of a whole
// file (`chimera quantize IN OUT TYPE`).
//
// Policy (spec 1.7): tensors that llama.cpp keeps in F32 stay F32 whatever the target: 1-D
// tensors, norms, ffn_gate_inp(_shexp), ssm_conv1d, shortconv.conv, and every tensor whose name
// does not end in ".weight" (ssm_a, ssm_d, biases). Everything else gets the target type; a tensor
// whose row length ne0 is not a multiple of the type's block size falls back as llama.cpp's do
// (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL; F16 when ne0 is not a multiple of
// 32 either), and the plan says so. Q4_K_M raises output.weight, and attn_v / ffn_down in the
// first and last eighth of their layers and every third layer between, to Q6_K (the same mix as
// llama.cpp's Q4_K_M); the fallback applies after that choice. The other targets are "pure": Q4_1,
// Q5_0, Q5_1, IQ4_NL and IQ4_XS files hold that type in every quantized tensor (llama.cpp's
// IQ4 mixes, which move some tensors to Q5_K/Q6_K, are not reproduced).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/threads.h"
#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "gguf/types.h"

namespace chimera {

struct QuantizeTarget {
  std::string name;    // as the user wrote it, upper-cased: "Q4_K_M"
  GgmlType base;       // the type of most weight matrices
  bool k_mix = false;  // Q4_K_M: more bits for output, attn_v, ffn_down
  uint32_t file_type;  // general.file_type (llama_ftype): 0 F32, 1 F16, 2 Q4_0, 7 Q8_0, ...
};

// "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS, Q4_K_M"
// (case-insensitive).
Result<QuantizeTarget> parse_quantize_target(std::string_view name);
const char* quantize_target_names();

// Whether a tensor stays F32 whatever the target (spec 1.7).
bool stays_f32(std::string_view name, uint32_t n_dims);

struct TensorChoice {
  GgmlType type;
  std::string note;  // why the type differs from the target's base type; empty when it does not
};

// Decides one tensor's output type. `layer_rank` / `layer_count`: the position of this tensor's
// layer among the layers that have a tensor of the same kind (attn_v, ffn_down), for Q4_K_M.
TensorChoice choose_tensor_type(const QuantizeTarget& target, std::string_view name,
                                uint32_t n_dims, int64_t ne0, int layer_rank, int layer_count);

// The plan for every tensor of a file, in file order.
struct TensorPlan {
  const GgufTensorInfo* tensor;
  TensorChoice choice;
};
std::vector<TensorPlan> plan_quantization(const GgufFile& file, const QuantizeTarget& target);

// Converts a tensor's data to `to` row by row (dequantize, then quantize; plain copy when the type
// is unchanged), rows split over threads. Fails, naming the tensor, row and column, on a source
// type chimera cannot read or a value that cannot be represented (NaN, infinity, overflow).
Status convert_tensor(const GgufTensorInfo& t, GgmlType to, ThreadContext& threads,
                      std::vector<uint8_t>* out);

// Copies every metadata key of `file` to `w` (general.alignment as the writer's alignment).
Status copy_metadata(const GgufFile& file, GgufWriter& w);

struct QuantizeSummary {
  uint64_t tensors = 0, converted = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor data only
};

// Reads `in_path`, writes `out_path` (atomically) with every metadata key copied, general.file_type
// and general.quantization_version set, and each tensor converted as planned. `log` receives one
// line per tensor. On error nothing is written.
Result<QuantizeSummary> quantize_model(const std::string& in_path, const std::string& out_path,
                                       const QuantizeTarget& target, ThreadContext& threads,
                                       const std::function<void(const std::string&)>& log);

}  // namespace chimera
