// Memory-mapped GGUF reader (versions 2 and 3). Every count, length, offset and size is validated
// against the file before use; errors name the field and the byte offset. Tensor data and string
// values are views into the mapping: nothing is copied, so multi-GB files open instantly.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/large_buffer.h"
#include "core/status.h"
#include "gguf/types.h"

namespace chimera {

enum class GgufValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);
// Inverse of gguf_value_type_name ("UINT32" -> UINT32); nullopt for anything else.
std::optional<GgufValueType> gguf_value_type_from_name(std::string_view name);
// Bytes of one packed element; 0 for STRING and ARRAY (variable size).
uint64_t gguf_value_type_size(GgufValueType t);
// UINT8..INT64 (BOOL and floats are not integers).
bool gguf_value_type_is_integer(GgufValueType t);

// One metadata value. Scalars are decoded; arrays keep a view of their packed elements
// (numeric) or a list of string views (strings).
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  GgufValueType elem_type = GgufValueType::UINT8;  // for ARRAY
  uint64_t count = 0;                              // for ARRAY: number of elements
  // Scalars: integers in i/u (both filled when representable), floats in f, bool in b.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  bool b = false;
  std::string_view str;                 // STRING
  const uint8_t* array_data = nullptr;  // numeric ARRAY: packed little-endian elements
  std::vector<std::string_view> strs;   // ARRAY of STRING
};

// Element `index` of an ARRAY value, decoded like a scalar of the element type (strings as views).
// The index must be < count (checked: an internal invariant, not input validation).
GgufValue gguf_array_element(const GgufValue& array, uint64_t index);

struct GgufKV {
  std::string key;
  GgufValue value;
  uint64_t file_offset = 0;  // where the record starts, for messages
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ggml order: ne[0] is contiguous
  uint64_t offset = 0;           // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // points into the mapping
  uint64_t n_elements() const { return uint64_t(ne[0]) * ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const { return chimera::row_bytes(type, ne[0]); }
  std::string shape_string() const;  // "{768, 50257}"
};

// How GgufFile::open brings a file's bytes into memory.
enum class GgufLoad {
  kMap,   // mmap read-only: pages load on first touch and stay shared with the page cache
  kCopy,  // read into a LargeBuffer (2 MiB pages where the kernel allows: faster streaming)
  kAuto,  // kCopy when transparent huge pages are available and the file takes at most half of
          // the available memory, else kMap
};

class GgufFile {
 public:
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path,
                                                GgufLoad how = GgufLoad::kMap);
  // Parses a buffer the caller keeps alive (tests, fuzzing). `name` is used in messages.
  static Result<std::unique_ptr<GgufFile>> from_buffer(const uint8_t* data, size_t size,
                                                       std::string name = "<buffer>");
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section

  const std::vector<GgufKV>& kvs() const { return kvs_; }
  const GgufKV* find(std::string_view key) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Typed accessors. Integer keys are accepted at any integer width (and BOOL for integers) as
  // long as the value fits T; floats accept FLOAT32/FLOAT64; errors name the key and the type
  // found. T in: bool, int8..int64, uint8..uint64, float, double, std::string, std::string_view.
  template <typename T>
  Result<T> get(std::string_view key) const;
  // std::nullopt when the key is absent; an error when present with an unusable type.
  template <typename T>
  Result<std::optional<T>> get_optional(std::string_view key) const;
  template <typename T>
  Result<T> get_or(std::string_view key, T fallback) const;
  // Numeric arrays converted element-wise (same rules as get<T>).
  template <typename T>
  Result<std::vector<T>> get_array(std::string_view key) const;
  Result<std::vector<std::string_view>> get_string_array(std::string_view key) const;
  // Per-layer integer: an array of n_layers values, or a scalar meaning "same for every layer".
  Result<std::vector<uint32_t>> get_per_layer(std::string_view key, uint32_t n_layers) const;

  // general.architecture, or "" when absent.
  std::string_view architecture() const;

 private:
  GgufFile() = default;
  Status parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  LargeBuffer copy_;  // the bytes, when read rather than mapped
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKV> kvs_;
  std::vector<GgufTensorInfo> tensors_;
  // name -> index; the views point into the file's bytes, which live as long as this object.
  std::unordered_map<std::string_view, size_t> kv_index_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

}  // namespace chimera
