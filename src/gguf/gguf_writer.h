// GGUF writer (version 3): metadata of every value type, tensors with raw bytes, custom alignment.
// The layout matches what GgufFile accepts and what the `gguf` Python package writes: header,
// key/value records in insertion order, tensor infos, padding to the alignment, tensor data in
// info order, each padded to the alignment.
//
//   GgufWriter w;
//   w.set_string("general.architecture", "granitehybrid");
//   w.set_uint32("granitehybrid.block_count", 4);
//   w.set_array("granitehybrid.attention.head_count_kv", std::vector<int32_t>{0, 0, 8, 0});
//   CHIMERA_RETURN_IF_ERROR(w.add_tensor("output_norm.weight", GgmlType::F32, {256}, data, 1024));
//   CHIMERA_RETURN_IF_ERROR(w.write_file("out.gguf"));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "gguf/gguf_file.h"
#include "gguf/types.h"

namespace chimera {

class GgufWriter {
 public:
  GgufWriter() = default;

  // Setting a key that exists replaces its value in place (the gguf package does the same).
  void set_uint8(std::string_view key, uint8_t v);
  void set_int8(std::string_view key, int8_t v);
  void set_uint16(std::string_view key, uint16_t v);
  void set_int16(std::string_view key, int16_t v);
  void set_uint32(std::string_view key, uint32_t v);
  void set_int32(std::string_view key, int32_t v);
  void set_uint64(std::string_view key, uint64_t v);
  void set_int64(std::string_view key, int64_t v);
  void set_float32(std::string_view key, float v);
  void set_float64(std::string_view key, double v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);
  // Numeric arrays; the element type follows T (uint8_t -> UINT8, int32_t -> INT32, float ->
  // FLOAT32, bool -> BOOL, ...).
  template <typename T>
  void set_array(std::string_view key, const std::vector<T>& values);
  void set_string_array(std::string_view key, const std::vector<std::string>& values);
  // Packed little-endian elements of a numeric type; `count` elements of elem_type.
  Status set_raw_array(std::string_view key, GgufValueType elem_type, const void* data,
                       uint64_t count);
  bool has_key(std::string_view key) const;
  bool remove_key(std::string_view key);

  // Sets the data alignment and writes it as general.alignment (UINT32). Must be a power of two.
  Status set_alignment(uint32_t alignment);
  uint64_t alignment() const { return alignment_; }

  // Adds a tensor: ne in ggml order (ne[0] contiguous), 1 to 4 dims, nbytes must equal the size
  // the type and shape imply. add_tensor copies the bytes; add_tensor_view keeps a pointer the
  // caller keeps alive until the write (for large tensors, e.g. the quantizer's output).
  Status add_tensor(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                    const void* data, uint64_t nbytes);
  Status add_tensor_view(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                         const void* data, uint64_t nbytes);
  size_t tensor_count() const { return tensors_.size(); }
  size_t kv_count() const { return kvs_.size(); }

  // The whole file in memory.
  std::vector<uint8_t> to_bytes() const;
  // Writes `path` atomically: a temporary file in the same directory, fsync, then rename, so a
  // reader never sees a half-written file and a failure leaves any old file untouched.
  Status write_file(const std::string& path) const;

 private:
  struct Kv {
    std::string key;
    GgufValueType type = GgufValueType::UINT8;
    GgufValueType elem_type = GgufValueType::UINT8;
    uint64_t count = 0;
    std::vector<uint8_t> bytes;  // encoded value (after the type id), ready to write
  };
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    std::vector<uint8_t> owned;
    const uint8_t* data = nullptr;
    uint64_t nbytes = 0;
  };

  Kv& slot(std::string_view key);  // existing record or a new one at the end
  void set_scalar(std::string_view key, GgufValueType type, const void* v, size_t size);
  Status add_tensor_impl(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                         const void* data, uint64_t nbytes, bool copy);
  // Calls sink(bytes, size) for each piece of the file, in order.
  template <typename Sink>
  void emit(Sink&& sink) const;

  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
  uint64_t alignment_ = 32;
};

}  // namespace chimera
