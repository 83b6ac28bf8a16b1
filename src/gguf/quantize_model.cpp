#include "gguf/quantize_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "gguf/gguf_writer.h"
#include "gguf/quants.h"

namespace chimera {
namespace {

constexpr uint32_t kQuantizationVersion = 2;  // general.quantization_version of current ggml

struct TargetRow {
  const char* name;
  GgmlType base;
  bool k_mix;
  uint32_t file_type;
};

// file_type values are llama_ftype (gguf.LlamaFileType). A pure K-quant file is recorded as the
// "_S" variant, the closest llama.cpp name for "mostly this type".
constexpr TargetRow kTargets[] = {
    {"F32", GgmlType::F32, false, 0},        {"F16", GgmlType::F16, false, 1},
    {"BF16", GgmlType::BF16, false, 32},     {"Q8_0", GgmlType::Q8_0, false, 7},
    {"Q4_0", GgmlType::Q4_0, false, 2},      {"Q4_K", GgmlType::Q4_K, false, 14},
    {"Q5_K", GgmlType::Q5_K, false, 16},     {"Q6_K", GgmlType::Q6_K, false, 18},
    {"Q4_K_M", GgmlType::Q4_K, true, 15},    {"Q4_1", GgmlType::Q4_1, false, 3},
    {"Q5_0", GgmlType::Q5_0, false, 8},      {"Q5_1", GgmlType::Q5_1, false, 9},
    {"IQ4_NL", GgmlType::IQ4_NL, false, 25}, {"IQ4_XS", GgmlType::IQ4_XS, false, 30},
};

// llama.cpp's fallback (llama-quant.cpp, tensor_type_fallback) for a row length that is not a
// multiple of the wanted type's block: a 256-block type gives way to the 32-block type of about
// the same bits per weight; F16 when even that does not fit.
GgmlType fallback_type(GgmlType want, int64_t ne0) {
  GgmlType t = GgmlType::F16;
  switch (want) {
    case GgmlType::Q4_K:
      t = GgmlType::Q5_0;
      break;
    case GgmlType::Q5_K:
      t = GgmlType::Q5_1;
      break;
    case GgmlType::Q6_K:
      t = GgmlType::Q8_0;
      break;
    case GgmlType::IQ4_XS:
      t = GgmlType::IQ4_NL;
      break;
    default:
      break;
  }
  return ne0 % type_traits(t).block_size == 0 ? t : GgmlType::F16;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Why a tensor must stay F32 (spec 1.7), or nullptr.
const char* f32_reason(std::string_view name, uint32_t n_dims) {
  if (n_dims <= 1) return "1-D";
  if (!ends_with(name, ".weight")) return "not a .weight";
  if (ends_with(name, "norm.weight")) return "norm";
  if (contains(name, "ffn_gate_inp")) return "MoE router";
  if (contains(name, "ssm_conv1d") || contains(name, "shortconv.conv")) return "convolution";
  return nullptr;
}

// Layers that get more bits in Q4_K_M: the first and last eighth and every third one between.
bool use_more_bits(int rank, int count) {
  return rank < count / 8 || rank >= 7 * count / 8 || (rank - count / 8) % 3 == 2;
}

// "blk.12.attn_v.weight" -> layer 12, kind "attn_v.weight"; other names -> layer -1.
int split_layer(std::string_view name, std::string_view* kind) {
  *kind = name;
  if (name.substr(0, 4) != "blk.") return -1;
  size_t i = 4;
  int layer = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && layer < 1000000)
    layer = layer * 10 + (name[i++] - '0');
  if (i == 4 || i >= name.size() || name[i] != '.') return -1;
  *kind = name.substr(i + 1);
  return layer;
}

bool is_mix_kind(std::string_view kind) {
  return kind == "attn_v.weight" || kind.substr(0, 8) == "ffn_down";
}

// Dimensions that count (ggml_n_dims): trailing sizes of 1 are not dimensions.
uint32_t effective_dims(const GgufTensorInfo& t) {
  uint32_t n = 1;
  for (uint32_t i = 1; i < t.n_dims && i < 4; ++i)
    if (t.ne[i] > 1) n = i + 1;
  return n;
}

bool is_float_type(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
}

Status copy_kv(const GgufKV& kv, GgufWriter& w) {
  const GgufValue& v = kv.value;
  switch (v.type) {
    case GgufValueType::UINT8:
      w.set_uint8(kv.key, static_cast<uint8_t>(v.u));
      break;
    case GgufValueType::INT8:
      w.set_int8(kv.key, static_cast<int8_t>(v.i));
      break;
    case GgufValueType::UINT16:
      w.set_uint16(kv.key, static_cast<uint16_t>(v.u));
      break;
    case GgufValueType::INT16:
      w.set_int16(kv.key, static_cast<int16_t>(v.i));
      break;
    case GgufValueType::UINT32:
      w.set_uint32(kv.key, static_cast<uint32_t>(v.u));
      break;
    case GgufValueType::INT32:
      w.set_int32(kv.key, static_cast<int32_t>(v.i));
      break;
    case GgufValueType::UINT64:
      w.set_uint64(kv.key, v.u);
      break;
    case GgufValueType::INT64:
      w.set_int64(kv.key, v.i);
      break;
    case GgufValueType::FLOAT32:
      w.set_float32(kv.key, static_cast<float>(v.f));
      break;
    case GgufValueType::FLOAT64:
      w.set_float64(kv.key, v.f);
      break;
    case GgufValueType::BOOL:
      w.set_bool(kv.key, v.b);
      break;
    case GgufValueType::STRING:
      w.set_string(kv.key, v.str);
      break;
    case GgufValueType::ARRAY:
      if (v.elem_type == GgufValueType::STRING) {
        w.set_string_array(kv.key, std::vector<std::string>(v.strs.begin(), v.strs.end()));
        break;
      }
      return w.set_raw_array(kv.key, v.elem_type, v.array_data, v.count);
    default:
      return Error(ErrorCode::kUnsupported, "metadata key '", kv.key, "' at byte ", kv.file_offset,
                   " has a value type that cannot be copied");
  }
  return Status::Ok();
}

}  // namespace

Result<QuantizeTarget> parse_quantize_target(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const TargetRow& r : kTargets)
    if (upper == r.name) return QuantizeTarget{r.name, r.base, r.k_mix, r.file_type};
  return Error(ErrorCode::kInvalidArgument, "unknown quantization type '", name,
               "' (supported: ", quantize_target_names(), ")");
}

const char* quantize_target_names() {
  return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS, Q4_K_M";
}

bool stays_f32(std::string_view name, uint32_t n_dims) {
  return f32_reason(name, n_dims) != nullptr;
}

TensorChoice choose_tensor_type(const QuantizeTarget& target, std::string_view name,
                                uint32_t n_dims, int64_t ne0, int layer_rank, int layer_count) {
  if (target.base == GgmlType::F32) return {GgmlType::F32, ""};
  if (const char* why = f32_reason(name, n_dims))
    return {GgmlType::F32, StrCat("kept F32 (", why, ")")};
  GgmlType want = target.base;
  std::string note;
  if (target.k_mix) {
    std::string_view kind;
    split_layer(name, &kind);
    if (name == "output.weight") {
      want = GgmlType::Q6_K;
      note = StrCat(target.name, ": output in Q6_K");
    } else if (is_mix_kind(kind) && layer_count > 0 && use_more_bits(layer_rank, layer_count)) {
      want = GgmlType::Q6_K;
      note = StrCat(target.name, ": Q6_K in this layer");
    }
  }
  const int64_t block = type_traits(want).block_size;
  if (ne0 % block != 0) {
    const GgmlType fallback = fallback_type(want, ne0);
    note = StrCat("ne0 = ", ne0, " is not a multiple of ", block, ": ", type_name(fallback),
                  " instead of ", type_name(want));
    want = fallback;
  }
  return {want, note};
}

std::vector<TensorPlan> plan_quantization(const GgufFile& file, const QuantizeTarget& target) {
  // Rank of each layer among the layers holding a tensor of the same kind (attn_v exists only in
  // the attention layers of a hybrid model, so layer numbers themselves would mis-place the mix).
  std::map<std::string, std::vector<int>, std::less<>> layers_of_kind;
  for (const GgufTensorInfo& t : file.tensors()) {
    std::string_view kind;
    const int layer = split_layer(t.name, &kind);
    if (layer >= 0 && is_mix_kind(kind)) layers_of_kind[std::string(kind)].push_back(layer);
  }
  for (auto& [kind, layers] : layers_of_kind) std::sort(layers.begin(), layers.end());

  std::vector<TensorPlan> plan;
  plan.reserve(file.tensors().size());
  for (const GgufTensorInfo& t : file.tensors()) {
    std::string_view kind;
    const int layer = split_layer(t.name, &kind);
    int rank = 0, count = 0;
    if (auto it = layers_of_kind.find(kind); layer >= 0 && it != layers_of_kind.end()) {
      const std::vector<int>& layers = it->second;
      rank =
          static_cast<int>(std::lower_bound(layers.begin(), layers.end(), layer) - layers.begin());
      count = static_cast<int>(layers.size());
    }
    TensorChoice choice =
        choose_tensor_type(target, t.name, effective_dims(t), t.ne[0], rank, count);
    if (choice.type != t.type && !can_dequantize(t.type)) {
      choice = {t.type, StrCat("kept ", type_name(t.type), " (chimera cannot read this type)")};
    } else if (!is_float_type(t.type) && choice.type != t.type) {
      choice.note +=
          StrCat(choice.note.empty() ? "" : "; ", "requantized from ", type_name(t.type));
    }
    plan.push_back({&t, std::move(choice)});
  }
  return plan;
}

Status convert_tensor(const GgufTensorInfo& t, GgmlType to, ThreadContext& threads,
                      std::vector<uint8_t>* out) {
  const int64_t ne0 = t.ne[0];
  const uint64_t n_rows = ne0 > 0 ? t.n_elements() / static_cast<uint64_t>(ne0) : 0;
  if (t.type == to) {
    out->assign(t.data, t.data + t.nbytes);
    return Status::Ok();
  }
  if (!can_dequantize(t.type))
    return Error(ErrorCode::kUnsupported, "tensor '", t.name, "' has type ", type_name(t.type),
                 ", which chimera cannot convert (supported: ", supported_type_names(), ")");
  if (!can_quantize(to) || ne0 % type_traits(to).block_size != 0)
    return Error(ErrorCode::kInvalidArgument, "tensor '", t.name, "' ", t.shape_string(),
                 " cannot be stored as ", type_name(to));
  const uint64_t in_row = t.row_bytes();
  const uint64_t out_row = row_bytes(to, static_cast<uint64_t>(ne0));
  out->assign(n_rows * out_row, 0);
  const bool check = to != GgmlType::F32;  // F32 holds whatever the source holds

  // The failure at the smallest row wins, so the message does not depend on thread timing.
  std::mutex mu;
  uint64_t bad_row = UINT64_MAX;
  Status bad;
  auto fail = [&](uint64_t r, Status st) {
    std::lock_guard<std::mutex> lock(mu);
    if (r < bad_row) {
      bad_row = r;
      bad = std::move(st);
    }
  };
  threads.parallel_for(static_cast<int64_t>(n_rows), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(ne0)), back(check ? static_cast<size_t>(ne0) : 0);
    for (int64_t r = begin; r < end; ++r) {
      const uint64_t ur = static_cast<uint64_t>(r);
      uint8_t* dst = out->data() + ur * out_row;
      Status st = dequantize_row(t.type, t.data + ur * in_row, row.data(), ne0);
      if (st.ok()) st = quantize_row(to, row.data(), dst, ne0);
      if (!st.ok()) return fail(ur, std::move(st));
      if (!check) continue;
      for (int64_t c = 0; c < ne0; ++c)
        if (!std::isfinite(row[c]))
          return fail(
              ur, Error(ErrorCode::kInvalidArgument, "tensor '", t.name, "' row ", r, " column ", c,
                        " holds ", row[c], ", which ", type_name(to), " cannot represent"));
      st = dequantize_row(to, dst, back.data(), ne0);
      if (!st.ok()) return fail(ur, std::move(st));
      for (int64_t c = 0; c < ne0; ++c) {
        if (std::isfinite(back[c])) continue;
        float amax = 0;
        for (float v : row) amax = std::max(amax, std::fabs(v));
        return fail(ur, Error(ErrorCode::kInvalidArgument, "tensor '", t.name, "' row ", r,
                              ": values up to ", amax, " overflow ", type_name(to), " (column ", c,
                              " decodes to ", back[c], ")"));
      }
    }
  });
  if (bad_row != UINT64_MAX) {
    out->clear();
    return bad;
  }
  return Status::Ok();
}

Status copy_metadata(const GgufFile& file, GgufWriter& w) {
  for (const GgufKV& kv : file.kvs()) {
    if (kv.key == "general.alignment") {
      CHIMERA_RETURN_IF_ERROR(w.set_alignment(static_cast<uint32_t>(file.alignment())));
    } else {
      CHIMERA_RETURN_IF_ERROR(copy_kv(kv, w));
    }
  }
  return Status::Ok();
}

Result<QuantizeSummary> quantize_model(const std::string& in_path, const std::string& out_path,
                                       const QuantizeTarget& target, ThreadContext& threads,
                                       const std::function<void(const std::string&)>& log) {
  CHIMERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(in_path));
  GgufWriter w;
  CHIMERA_RETURN_IF_ERROR(copy_metadata(*file, w));
  w.set_uint32("general.file_type", target.file_type);
  if (!is_float_type(target.base))
    w.set_uint32("general.quantization_version", kQuantizationVersion);

  const std::vector<TensorPlan> plan = plan_quantization(*file, target);
  std::vector<std::vector<uint8_t>> converted(plan.size());  // kept alive until the write
  QuantizeSummary sum;
  for (size_t i = 0; i < plan.size(); ++i) {
    const GgufTensorInfo& t = *plan[i].tensor;
    const GgmlType to = plan[i].choice.type;
    const uint8_t* data = t.data;
    uint64_t nbytes = t.nbytes;
    if (to != t.type) {
      Status st = convert_tensor(t, to, threads, &converted[i]);
      if (!st.ok()) return Status(st.code(), StrCat(in_path, ": ", st.message()));
      data = converted[i].data();
      nbytes = converted[i].size();
      ++sum.converted;
    }
    const std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    CHIMERA_RETURN_IF_ERROR(w.add_tensor_view(t.name, to, ne, data, nbytes));
    sum.tensors++;
    sum.bytes_in += t.nbytes;
    sum.bytes_out += nbytes;
    if (log) {
      log(StrCat("[", i + 1, "/", plan.size(), "] ", t.name, " ", t.shape_string(), " ",
                 type_name(t.type), " -> ", type_name(to),
                 plan[i].choice.note.empty() ? "" : StrCat("  (", plan[i].choice.note, ")")));
    }
  }
  CHIMERA_RETURN_IF_ERROR(w.write_file(out_path));
  return sum;
}

}  // namespace chimera
