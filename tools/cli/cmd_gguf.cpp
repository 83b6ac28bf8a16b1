// `chimera gguf FILE [--json] [--full-arrays]`: what a GGUF file holds — architecture, key
// hyper-parameters, every metadata key (long arrays and strings abbreviated in text), the tensor
// table and totals. --json prints all of it machine-readable (arrays longer than 64 elements are
// cut to their first 64 unless --full-arrays; strings with invalid UTF-8 get U+FFFD replacements).
//
// Hidden test aid: `chimera gguf OUT --write-from-json SPEC` writes OUT with GgufWriter from a JSON
// description (tests/python round-trips it through the gguf package):
//   {"alignment": 64,          (optional; sets general.alignment, appended unless listed in "kv")
//    "kv": [{"key": "k", "type": "UINT32", "value": 5},
//           {"key": "a", "type": "ARRAY", "elem_type": "STRING", "value": ["x", "y"]}],
//    "tensors": [{"name": "t", "type": "Q8_0", "ne": [32, 2], "data_hex": "00ff..."}]}
#include <CLI/CLI.hpp>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "core/status.h"
#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"

namespace chimera::cli {
namespace {

using nlohmann::json;

constexpr uint64_t kJsonArrayLimit =
    64;                                  // elements shown per array in --json without --full-arrays
constexpr uint64_t kTextArrayFull = 16;  // text shows arrays up to this length in full
constexpr uint64_t kTextArrayHead = 5;   // ... and the first few elements of longer ones
constexpr size_t kTextStringLimit = 80;  // bytes of a string value shown in text

// Hyper-parameters shown first, in this order, when present under "{arch}.".
const char* const kHyperParameters[] = {
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "attention.scale",
    "rope.dimension_count",
    "rope.freq_base",
    "rope.scaling.finetuned",
    "expert_count",
    "expert_used_count",
    "expert_shared_feed_forward_length",
    "embedding_scale",
    "residual_scale",
    "logit_scale",
    "ssm.conv_kernel",
    "ssm.inner_size",
    "ssm.state_size",
    "ssm.time_step_rank",
    "ssm.group_count",
    "vocab_size",
};

// ---- value formatting ----

json float_json(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  return f;
}

// A scalar (or one array element) as JSON.
json scalar_json(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::INT8:
    case GgufValueType::INT16:
    case GgufValueType::INT32:
    case GgufValueType::INT64:
      return v.i;
    case GgufValueType::UINT8:
    case GgufValueType::UINT16:
    case GgufValueType::UINT32:
    case GgufValueType::UINT64:
      return v.u;
    case GgufValueType::FLOAT32:
    case GgufValueType::FLOAT64:
      return float_json(v.f);
    case GgufValueType::BOOL:
      return v.b;
    case GgufValueType::STRING:
      return std::string(v.str);
    case GgufValueType::ARRAY:
      break;
  }
  return nullptr;
}

json kv_json(const GgufKV& kv, bool full_arrays) {
  json j;
  j["key"] = kv.key;
  j["type"] = gguf_value_type_name(kv.value.type);
  const GgufValue& v = kv.value;
  if (v.type != GgufValueType::ARRAY) {
    j["value"] = scalar_json(v);
    return j;
  }
  j["elem_type"] = gguf_value_type_name(v.elem_type);
  j["count"] = v.count;
  const uint64_t shown = full_arrays ? v.count : std::min(v.count, kJsonArrayLimit);
  json arr = json::array();
  for (uint64_t i = 0; i < shown; ++i) arr.push_back(scalar_json(gguf_array_element(v, i)));
  j["value"] = std::move(arr);
  if (shown < v.count) j["truncated"] = true;
  return j;
}

std::string quoted(std::string_view s, size_t limit) {
  std::string out = "\"";
  const size_t n = std::min(s.size(), limit);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (s.size() > limit) out += StrCat("... (", s.size(), " bytes)");
  return out;
}

// Fewest digits that read back as the same float (or double): 1e-05, not 9.99999975e-06.
std::string shortest_float_text(double f, bool is_float32) {
  char buf[40];
  if (std::fabs(f) < 1e15 && f == std::floor(f)) {  // 10000, not 1e+04
    std::snprintf(buf, sizeof buf, "%.0f", f);
    return buf;
  }
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, f);
    const bool same = is_float32 ? std::strtof(buf, nullptr) == static_cast<float>(f)
                                 : std::strtod(buf, nullptr) == f;
    if (same) break;
  }
  return buf;  // NaN never compares equal: it ends with 17 digits, printed as "nan"
}

std::string scalar_text(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::INT8:
    case GgufValueType::INT16:
    case GgufValueType::INT32:
    case GgufValueType::INT64:
      return std::to_string(v.i);
    case GgufValueType::UINT8:
    case GgufValueType::UINT16:
    case GgufValueType::UINT32:
    case GgufValueType::UINT64:
      return std::to_string(v.u);
    case GgufValueType::FLOAT32:
    case GgufValueType::FLOAT64:
      return shortest_float_text(v.f, v.type == GgufValueType::FLOAT32);
    case GgufValueType::BOOL:
      return v.b ? "true" : "false";
    case GgufValueType::STRING:
      return quoted(v.str, kTextStringLimit);
    case GgufValueType::ARRAY:
      break;
  }
  return "?";
}

std::string value_text(const GgufValue& v) {
  if (v.type != GgufValueType::ARRAY) return scalar_text(v);
  std::string out = "[";
  const bool full = v.count <= kTextArrayFull;
  if (!full) {
    out += StrCat(
        v.count, " ",
        v.elem_type == GgufValueType::STRING ? "strings" : gguf_value_type_name(v.elem_type), ": ");
  }
  const uint64_t shown = full ? v.count : kTextArrayHead;
  for (uint64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    GgufValue e = gguf_array_element(v, i);
    out += e.type == GgufValueType::STRING ? quoted(e.str, 32) : scalar_text(e);
  }
  if (!full) out += ", ... ";
  return out + "]";
}

std::string type_text(const GgufValue& v) {
  if (v.type == GgufValueType::ARRAY) return StrCat("[", gguf_value_type_name(v.elem_type), "]");
  return gguf_value_type_name(v.type);
}

struct Totals {
  uint64_t params = 0, bytes = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;  // name -> (tensors, bytes)
};

Totals totals_of(const GgufFile& f) {
  Totals t;
  for (const GgufTensorInfo& ti : f.tensors()) {
    t.params += ti.n_elements();
    t.bytes += ti.nbytes;
    auto& bt = t.by_type[type_name(ti.type)];
    bt.first += 1;
    bt.second += ti.nbytes;
  }
  return t;
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / 1048576.0);
  else if (b >= (1ull << 10))
    std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", b);
  return buf;
}

// Present hyper-parameters as (name without prefix, kv).
std::vector<std::pair<std::string, const GgufKV*>> hyper_parameters(const GgufFile& f) {
  std::vector<std::pair<std::string, const GgufKV*>> out;
  const std::string arch(f.architecture());
  if (arch.empty()) return out;
  for (const char* k : kHyperParameters)
    if (const GgufKV* kv = f.find(arch + "." + k)) out.emplace_back(k, kv);
  return out;
}

void print_text(const GgufFile& f) {
  std::printf("%s: GGUF v%u, %" PRIu64 " bytes (%s), %zu metadata keys, %zu tensors\n",
              f.path().c_str(), f.version(), f.file_size(), human_bytes(f.file_size()).c_str(),
              f.kvs().size(), f.tensors().size());
  std::printf("alignment %" PRIu64 ", tensor data at byte %" PRIu64 "\n", f.alignment(),
              f.data_offset());
  const std::string_view arch = f.architecture();
  std::printf("architecture: %s\n", arch.empty() ? "(none)" : std::string(arch).c_str());

  auto hp = hyper_parameters(f);
  const GgufKV* tokens = f.find("tokenizer.ggml.tokens");
  if (!hp.empty() || tokens) {
    std::printf("\nhyper-parameters:\n");
    for (const auto& [name, kv] : hp)
      std::printf("  %-36s %s\n", name.c_str(), value_text(kv->value).c_str());
    if (tokens && tokens->value.type == GgufValueType::ARRAY)
      std::printf("  %-36s %" PRIu64 " (tokenizer.ggml.tokens)\n", "n_vocab", tokens->value.count);
  }

  std::printf("\nmetadata (%zu keys):\n", f.kvs().size());
  size_t key_width = 20;
  for (const GgufKV& kv : f.kvs())
    key_width = std::max(key_width, std::min<size_t>(kv.key.size(), 56));
  for (const GgufKV& kv : f.kvs()) {
    std::printf("  %-*s %-9s %s\n", static_cast<int>(key_width), kv.key.c_str(),
                type_text(kv.value).c_str(), value_text(kv.value).c_str());
  }

  std::printf("\ntensors (%zu):\n", f.tensors().size());
  size_t name_width = 4;
  for (const GgufTensorInfo& t : f.tensors()) name_width = std::max(name_width, t.name.size());
  std::printf("  %-*s  %-7s  %-24s %14s\n", static_cast<int>(name_width), "name", "type", "shape",
              "bytes");
  for (const GgufTensorInfo& t : f.tensors()) {
    std::printf("  %-*s  %-7s  %-24s %14" PRIu64 "\n", static_cast<int>(name_width), t.name.c_str(),
                type_name(t.type), t.shape_string().c_str(), t.nbytes);
  }

  const Totals tot = totals_of(f);
  std::printf("\ntotals: %zu tensors, %" PRIu64 " parameters, %" PRIu64 " bytes (%s)\n",
              f.tensors().size(), tot.params, tot.bytes, human_bytes(tot.bytes).c_str());
  for (const auto& [name, cb] : tot.by_type) {
    std::printf("  %-7s %5" PRIu64 " tensors %14" PRIu64 " bytes (%s)\n", name.c_str(), cb.first,
                cb.second, human_bytes(cb.second).c_str());
  }
}

json file_json(const GgufFile& f, bool full_arrays) {
  json j;
  j["file"] = f.path();
  j["file_size"] = f.file_size();
  j["version"] = f.version();
  j["alignment"] = f.alignment();
  j["data_offset"] = f.data_offset();
  j["architecture"] = std::string(f.architecture());
  json hp = json::object();
  for (const auto& [name, kv] : hyper_parameters(f)) hp[name] = kv_json(*kv, true)["value"];
  j["hyperparameters"] = std::move(hp);
  json md = json::array();
  for (const GgufKV& kv : f.kvs()) md.push_back(kv_json(kv, full_arrays));
  j["metadata"] = std::move(md);
  json ts = json::array();
  for (const GgufTensorInfo& t : f.tensors()) {
    json shape = json::array();
    for (uint32_t d = 0; d < t.n_dims; ++d) shape.push_back(t.ne[d]);
    ts.push_back({{"name", t.name},
                  {"type", type_name(t.type)},
                  {"type_id", static_cast<uint32_t>(t.type)},
                  {"shape", std::move(shape)},
                  {"n_elements", t.n_elements()},
                  {"offset", t.offset},
                  {"nbytes", t.nbytes}});
  }
  j["tensors"] = std::move(ts);
  const Totals tot = totals_of(f);
  json by_type = json::object();
  for (const auto& [name, cb] : tot.by_type)
    by_type[name] = {{"tensors", cb.first}, {"bytes", cb.second}};
  j["totals"] = {{"tensor_count", f.tensors().size()},
                 {"parameter_count", tot.params},
                 {"bytes", tot.bytes},
                 {"bytes_by_type", std::move(by_type)}};
  return j;
}

// ---- --write-from-json ----

Status spec_error(const std::string& where, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "spec ", where, ": ", what);
}

template <typename T>
void put_le(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(v));
  std::memcpy(out.data() + at, &v, sizeof(v));
}

template <typename T>
T load_le(const std::vector<uint8_t>& bytes) {
  T v;
  std::memcpy(&v, bytes.data(), sizeof(v));
  return v;
}

// Appends JSON integer `x` as a T, or fails when it does not fit.
template <typename T>
Status put_int(const json& x, std::vector<uint8_t>& out, const std::string& where) {
  bool fits;
  if (x.is_number_unsigned()) {  // nlohmann parses every non-negative integer as unsigned
    fits = x.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else {
    const int64_t i = x.get<int64_t>();
    fits = std::numeric_limits<T>::is_signed &&
           i >= static_cast<int64_t>(std::numeric_limits<T>::min());
  }
  if (!fits) return spec_error(where, StrCat(x.dump(), " does not fit the value type"));
  put_le<T>(out, x.is_number_unsigned() ? static_cast<T>(x.get<uint64_t>())
                                        : static_cast<T>(x.get<int64_t>()));
  return Status::Ok();
}

// Appends one numeric element of `type` taken from JSON `x` to `out`, range-checked.
Status pack_number(const json& x, GgufValueType type, std::vector<uint8_t>& out,
                   const std::string& where) {
  if (type == GgufValueType::BOOL) {
    if (!x.is_boolean()) return spec_error(where, "expected true/false");
    put_le<uint8_t>(out, x.get<bool>() ? 1 : 0);
    return Status::Ok();
  }
  if (type == GgufValueType::FLOAT32 || type == GgufValueType::FLOAT64) {
    if (!x.is_number()) return spec_error(where, "expected a number");
    if (type == GgufValueType::FLOAT32)
      put_le<float>(out, static_cast<float>(x.get<double>()));
    else
      put_le<double>(out, x.get<double>());
    return Status::Ok();
  }
  if (!x.is_number_integer()) return spec_error(where, "expected an integer");
  switch (type) {
    case GgufValueType::UINT8:
      return put_int<uint8_t>(x, out, where);
    case GgufValueType::INT8:
      return put_int<int8_t>(x, out, where);
    case GgufValueType::UINT16:
      return put_int<uint16_t>(x, out, where);
    case GgufValueType::INT16:
      return put_int<int16_t>(x, out, where);
    case GgufValueType::UINT32:
      return put_int<uint32_t>(x, out, where);
    case GgufValueType::INT32:
      return put_int<int32_t>(x, out, where);
    case GgufValueType::UINT64:
      return put_int<uint64_t>(x, out, where);
    case GgufValueType::INT64:
      return put_int<int64_t>(x, out, where);
    default:
      return spec_error(where, "not a numeric type");
  }
}

Result<GgufValueType> spec_type(const json& j, const char* field, const std::string& where) {
  if (!j.contains(field) || !j[field].is_string())
    return spec_error(where, StrCat("missing string field '", field, "'"));
  auto t = gguf_value_type_from_name(j[field].get<std::string>());
  if (!t)
    return spec_error(where, StrCat("unknown value type '", j[field].get<std::string>(), "'"));
  return *t;
}

Status add_spec_kv(GgufWriter& w, const json& e, size_t index) {
  const std::string where = StrCat("kv[", index, "]");
  if (!e.is_object() || !e.contains("key") || !e["key"].is_string() || !e.contains("value"))
    return spec_error(where, "needs string 'key', 'type' and 'value'");
  const std::string key = e["key"].get<std::string>();
  CHIMERA_ASSIGN_OR_RETURN(GgufValueType type, spec_type(e, "type", where));
  const json& v = e["value"];
  if (type == GgufValueType::STRING) {
    if (!v.is_string()) return spec_error(where, "expected a string value");
    w.set_string(key, v.get<std::string>());
    return Status::Ok();
  }
  if (type != GgufValueType::ARRAY) {
    std::vector<uint8_t> b;
    CHIMERA_RETURN_IF_ERROR(pack_number(v, type, b, where));
    switch (type) {
      case GgufValueType::UINT8:
        w.set_uint8(key, load_le<uint8_t>(b));
        break;
      case GgufValueType::INT8:
        w.set_int8(key, load_le<int8_t>(b));
        break;
      case GgufValueType::UINT16:
        w.set_uint16(key, load_le<uint16_t>(b));
        break;
      case GgufValueType::INT16:
        w.set_int16(key, load_le<int16_t>(b));
        break;
      case GgufValueType::UINT32:
        w.set_uint32(key, load_le<uint32_t>(b));
        break;
      case GgufValueType::INT32:
        w.set_int32(key, load_le<int32_t>(b));
        break;
      case GgufValueType::UINT64:
        w.set_uint64(key, load_le<uint64_t>(b));
        break;
      case GgufValueType::INT64:
        w.set_int64(key, load_le<int64_t>(b));
        break;
      case GgufValueType::FLOAT32:
        w.set_float32(key, load_le<float>(b));
        break;
      case GgufValueType::FLOAT64:
        w.set_float64(key, load_le<double>(b));
        break;
      case GgufValueType::BOOL:
        w.set_bool(key, b[0] != 0);
        break;
      default:
        return spec_error(where, "not a scalar type");
    }
    return Status::Ok();
  }
  CHIMERA_ASSIGN_OR_RETURN(GgufValueType elem, spec_type(e, "elem_type", where));
  if (!v.is_array()) return spec_error(where, "expected an array value");
  if (elem == GgufValueType::ARRAY) return spec_error(where, "nested arrays are not allowed");
  if (elem == GgufValueType::STRING) {
    std::vector<std::string> strs;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string())
        return spec_error(StrCat(where, ".value[", i, "]"), "expected a string");
      strs.push_back(v[i].get<std::string>());
    }
    w.set_string_array(key, strs);
    return Status::Ok();
  }
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < v.size(); ++i)
    CHIMERA_RETURN_IF_ERROR(pack_number(v[i], elem, bytes, StrCat(where, ".value[", i, "]")));
  return w.set_raw_array(key, elem, bytes.data(), v.size());
}

Result<std::vector<uint8_t>> from_hex(const std::string& hex, const std::string& where) {
  if (hex.size() % 2) return spec_error(where, "data_hex has an odd number of digits");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return spec_error(where, StrCat("data_hex has a non-hex digit near ", 2 * i));
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return out;
}

Status write_from_json(const std::string& spec_path, const std::string& out_path) {
  std::ifstream in(spec_path);
  if (!in) return Error(ErrorCode::kNotFound, "cannot open spec '", spec_path, "'");
  json spec = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded() || !spec.is_object())
    return Error(ErrorCode::kInvalidArgument, "spec '", spec_path, "' is not a JSON object");
  GgufWriter w;
  if (spec.contains("kv")) {
    if (!spec["kv"].is_array()) return spec_error("kv", "expected an array");
    for (size_t i = 0; i < spec["kv"].size(); ++i)
      CHIMERA_RETURN_IF_ERROR(add_spec_kv(w, spec["kv"][i], i));
  }
  if (spec.contains("alignment")) {
    const json& a = spec["alignment"];
    if (!a.is_number_unsigned() || a.get<uint64_t>() > 0xffffffffu)
      return spec_error("alignment", "expected a 32-bit unsigned integer");
    CHIMERA_RETURN_IF_ERROR(w.set_alignment(a.get<uint32_t>()));
  }
  if (spec.contains("tensors")) {
    if (!spec["tensors"].is_array()) return spec_error("tensors", "expected an array");
    for (size_t i = 0; i < spec["tensors"].size(); ++i) {
      const json& t = spec["tensors"][i];
      const std::string where = StrCat("tensors[", i, "]");
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("type") ||
          !t["type"].is_string() || !t.contains("ne") || !t["ne"].is_array() ||
          !t.contains("data_hex") || !t["data_hex"].is_string())
        return spec_error(where, "needs 'name', 'type', 'ne' and 'data_hex'");
      auto type = type_from_name(t["type"].get<std::string>());
      if (!type) return spec_error(where, StrCat("unknown tensor type ", t["type"].dump()));
      std::vector<int64_t> ne;
      for (const json& d : t["ne"]) {
        if (!d.is_number_integer()) return spec_error(where, "ne must hold integers");
        ne.push_back(d.get<int64_t>());
      }
      CHIMERA_ASSIGN_OR_RETURN(std::vector<uint8_t> data,
                               from_hex(t["data_hex"].get<std::string>(), where));
      CHIMERA_RETURN_IF_ERROR(
          w.add_tensor(t["name"].get<std::string>(), *type, ne, data.data(), data.size()));
    }
  }
  return w.write_file(out_path);
}

int run_gguf(int argc, char** argv) {
  CLI::App app{"Inspect a GGUF file: architecture, hyper-parameters, metadata, tensors, totals",
               "chimera gguf"};
  std::string path, write_spec;
  bool as_json = false, full_arrays = false;
  app.add_option("FILE", path, "GGUF file")->required();
  app.add_flag("--json", as_json, "machine-readable output");
  app.add_flag("--full-arrays", full_arrays,
               "with --json, print every array element (default: first 64)");
  app.add_option("--write-from-json", write_spec,
                 "test aid: write FILE with chimera's GgufWriter from a JSON spec")
      ->group("");  // hidden
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (!write_spec.empty()) {
    Status st = write_from_json(write_spec, path);
    if (!st.ok()) {
      std::fprintf(stderr, "chimera gguf: %s\n", st.ToString().c_str());
      return 1;
    }
    return 0;
  }

  auto file = GgufFile::open(path);
  if (!file.ok()) {
    std::fprintf(stderr, "chimera gguf: %s\n", file.status().ToString().c_str());
    return 1;
  }
  if (as_json) {
    // Invalid UTF-8 in keys or strings is replaced rather than thrown on.
    const std::string out =
        file_json(**file, full_arrays).dump(1, ' ', false, json::error_handler_t::replace);
    std::printf("%s\n", out.c_str());
  } else {
    print_text(**file);
  }
  return 0;
}

const Registrar kRegistrar(Command{
    "gguf", "inspect a GGUF file (metadata, tensors, totals; --json)", run_gguf});

}  // namespace
}  // namespace chimera::cli
