#include "gguf/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <type_traits>

namespace chimera {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kVersion = 3;
constexpr uint64_t kMaxNameLength = 63;  // what GgufFile (and llama.cpp) accept

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));  // little-endian hosts only, as the reader
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

template <typename T>
constexpr GgufValueType value_type_of() {
  if constexpr (std::is_same_v<T, bool>)
    return GgufValueType::BOOL;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return GgufValueType::UINT8;
  else if constexpr (std::is_same_v<T, int8_t>)
    return GgufValueType::INT8;
  else if constexpr (std::is_same_v<T, uint16_t>)
    return GgufValueType::UINT16;
  else if constexpr (std::is_same_v<T, int16_t>)
    return GgufValueType::INT16;
  else if constexpr (std::is_same_v<T, uint32_t>)
    return GgufValueType::UINT32;
  else if constexpr (std::is_same_v<T, int32_t>)
    return GgufValueType::INT32;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return GgufValueType::UINT64;
  else if constexpr (std::is_same_v<T, int64_t>)
    return GgufValueType::INT64;
  else if constexpr (std::is_same_v<T, float>)
    return GgufValueType::FLOAT32;
  else if constexpr (std::is_same_v<T, double>)
    return GgufValueType::FLOAT64;
  else
    static_assert(!sizeof(T), "no GGUF value type for T");
}

uint64_t pad_to(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

}  // namespace

GgufWriter::Kv& GgufWriter::slot(std::string_view key) {
  for (Kv& kv : kvs_)
    if (kv.key == key) {
      kv.bytes.clear();
      kv.count = 0;
      return kv;
    }
  Kv kv;
  kv.key = std::string(key);
  kv.type = GgufValueType::UINT8;
  kvs_.push_back(std::move(kv));
  return kvs_.back();
}

void GgufWriter::set_scalar(std::string_view key, GgufValueType type, const void* v, size_t size) {
  Kv& kv = slot(key);
  kv.type = type;
  kv.bytes.assign(static_cast<const uint8_t*>(v), static_cast<const uint8_t*>(v) + size);
}

void GgufWriter::set_uint8(std::string_view k, uint8_t v) {
  set_scalar(k, GgufValueType::UINT8, &v, 1);
}
void GgufWriter::set_int8(std::string_view k, int8_t v) {
  set_scalar(k, GgufValueType::INT8, &v, 1);
}
void GgufWriter::set_uint16(std::string_view k, uint16_t v) {
  set_scalar(k, GgufValueType::UINT16, &v, 2);
}
void GgufWriter::set_int16(std::string_view k, int16_t v) {
  set_scalar(k, GgufValueType::INT16, &v, 2);
}
void GgufWriter::set_uint32(std::string_view k, uint32_t v) {
  set_scalar(k, GgufValueType::UINT32, &v, 4);
}
void GgufWriter::set_int32(std::string_view k, int32_t v) {
  set_scalar(k, GgufValueType::INT32, &v, 4);
}
void GgufWriter::set_uint64(std::string_view k, uint64_t v) {
  set_scalar(k, GgufValueType::UINT64, &v, 8);
}
void GgufWriter::set_int64(std::string_view k, int64_t v) {
  set_scalar(k, GgufValueType::INT64, &v, 8);
}
void GgufWriter::set_float32(std::string_view k, float v) {
  set_scalar(k, GgufValueType::FLOAT32, &v, 4);
}
void GgufWriter::set_float64(std::string_view k, double v) {
  set_scalar(k, GgufValueType::FLOAT64, &v, 8);
}
void GgufWriter::set_bool(std::string_view k, bool v) {
  const uint8_t b = v ? 1 : 0;
  set_scalar(k, GgufValueType::BOOL, &b, 1);
}
void GgufWriter::set_string(std::string_view k, std::string_view v) {
  Kv& kv = slot(k);
  kv.type = GgufValueType::STRING;
  put_string(kv.bytes, v);
}

template <typename T>
void GgufWriter::set_array(std::string_view key, const std::vector<T>& values) {
  Kv& kv = slot(key);
  kv.type = GgufValueType::ARRAY;
  kv.elem_type = value_type_of<T>();
  kv.count = values.size();
  for (const T& v : values) {
    if constexpr (std::is_same_v<T, bool>)
      put<uint8_t>(kv.bytes, v ? 1 : 0);
    else
      put<T>(kv.bytes, v);
  }
}

template void GgufWriter::set_array(std::string_view, const std::vector<bool>&);
template void GgufWriter::set_array(std::string_view, const std::vector<uint8_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<int8_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<uint16_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<int16_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<uint32_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<int32_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<uint64_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<int64_t>&);
template void GgufWriter::set_array(std::string_view, const std::vector<float>&);
template void GgufWriter::set_array(std::string_view, const std::vector<double>&);

void GgufWriter::set_string_array(std::string_view key, const std::vector<std::string>& values) {
  Kv& kv = slot(key);
  kv.type = GgufValueType::ARRAY;
  kv.elem_type = GgufValueType::STRING;
  kv.count = values.size();
  for (const std::string& s : values) put_string(kv.bytes, s);
}

Status GgufWriter::set_raw_array(std::string_view key, GgufValueType elem_type, const void* data,
                                 uint64_t count) {
  const uint64_t esize = gguf_value_type_size(elem_type);
  if (esize == 0)
    return Error(ErrorCode::kInvalidArgument, "set_raw_array('", key, "'): element type ",
                 gguf_value_type_name(elem_type), " is not a fixed-size numeric type");
  if (count != 0 && data == nullptr)
    return Error(ErrorCode::kInvalidArgument, "set_raw_array('", key, "'): null data");
  Kv& kv = slot(key);
  kv.type = GgufValueType::ARRAY;
  kv.elem_type = elem_type;
  kv.count = count;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (count != 0) kv.bytes.assign(p, p + count * esize);
  return Status::Ok();
}

bool GgufWriter::has_key(std::string_view key) const {
  for (const Kv& kv : kvs_)
    if (kv.key == key) return true;
  return false;
}

bool GgufWriter::remove_key(std::string_view key) {
  for (size_t i = 0; i < kvs_.size(); ++i)
    if (kvs_[i].key == key) {
      kvs_.erase(kvs_.begin() + static_cast<ptrdiff_t>(i));
      return true;
    }
  return false;
}

Status GgufWriter::set_alignment(uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    return Error(ErrorCode::kInvalidArgument, "alignment ", alignment, " is not a power of two");
  alignment_ = alignment;
  set_uint32("general.alignment", alignment);
  return Status::Ok();
}

Status GgufWriter::add_tensor_impl(std::string_view name, GgmlType type,
                                   const std::vector<int64_t>& ne, const void* data,
                                   uint64_t nbytes, bool copy) {
  if (name.empty() || name.size() > kMaxNameLength)
    return Error(ErrorCode::kInvalidArgument, "tensor name '", name, "' must be 1 to ",
                 kMaxNameLength, " bytes");
  for (const Tensor& t : tensors_)
    if (t.name == name) return Error(ErrorCode::kInvalidArgument, "duplicate tensor '", name, "'");
  if (ne.empty() || ne.size() > 4)
    return Error(ErrorCode::kInvalidArgument, "tensor '", name, "' has ", ne.size(),
                 " dims (1 to 4 allowed)");
  const TypeTraits& tt = type_traits(type);
  uint64_t n = 1;
  for (int64_t d : ne) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      return Error(ErrorCode::kInvalidArgument, "tensor '", name, "' has a bad shape");
  }
  if (ne[0] % tt.block_size != 0)
    return Error(ErrorCode::kInvalidArgument, "tensor '", name, "' ne[0] = ", ne[0],
                 " is not a multiple of the ", tt.name, " block size ", tt.block_size);
  const uint64_t want = n / tt.block_size * tt.type_size;
  if (nbytes != want)
    return Error(ErrorCode::kInvalidArgument, "tensor '", name, "' of type ", tt.name, " needs ",
                 want, " bytes, got ", nbytes);
  if (nbytes != 0 && data == nullptr)
    return Error(ErrorCode::kInvalidArgument, "tensor '", name, "' has null data");
  Tensor t{std::string(name), type, ne, {}, nullptr, nbytes};
  if (copy) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    if (nbytes != 0) t.owned.assign(p, p + nbytes);
  } else {
    t.data = static_cast<const uint8_t*>(data);
  }
  tensors_.push_back(std::move(t));
  if (copy) tensors_.back().data = tensors_.back().owned.data();
  return Status::Ok();
}

Status GgufWriter::add_tensor(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                              const void* data, uint64_t nbytes) {
  return add_tensor_impl(name, type, ne, data, nbytes, /*copy=*/true);
}

Status GgufWriter::add_tensor_view(std::string_view name, GgmlType type,
                                   const std::vector<int64_t>& ne, const void* data,
                                   uint64_t nbytes) {
  return add_tensor_impl(name, type, ne, data, nbytes, /*copy=*/false);
}

template <typename Sink>
void GgufWriter::emit(Sink&& sink) const {
  std::vector<uint8_t> head;
  put<uint32_t>(head, kGgufMagic);
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kvs_.size());
  for (const Kv& kv : kvs_) {
    put_string(head, kv.key);
    put<uint32_t>(head, static_cast<uint32_t>(kv.type));
    if (kv.type == GgufValueType::ARRAY) {
      put<uint32_t>(head, static_cast<uint32_t>(kv.elem_type));
      put<uint64_t>(head, kv.count);
    }
    head.insert(head.end(), kv.bytes.begin(), kv.bytes.end());
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put<int64_t>(head, d);
    put<uint32_t>(head, static_cast<uint32_t>(t.type));
    put<uint64_t>(head, offset);
    offset += pad_to(t.nbytes, alignment_);
  }
  // Pad the header to the alignment; the gguf package does so even without tensors.
  head.resize(pad_to(head.size(), alignment_), 0);
  sink(head.data(), head.size());
  const std::vector<uint8_t> zeros(alignment_, 0);
  for (const Tensor& t : tensors_) {
    if (t.nbytes != 0) sink(t.data, t.nbytes);
    const uint64_t pad = pad_to(t.nbytes, alignment_) - t.nbytes;
    if (pad != 0) sink(zeros.data(), pad);
  }
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  std::vector<uint8_t> out;
  emit([&out](const uint8_t* p, uint64_t n) { out.insert(out.end(), p, p + n); });
  return out;
}

Status GgufWriter::write_file(const std::string& path) const {
  // mkstemp in the target's directory so that rename() is atomic (same filesystem).
  std::string tmpl = path + ".tmp.XXXXXX";
  int fd = mkstemp(tmpl.data());
  if (fd < 0)
    return Error(ErrorCode::kIo, "cannot create a temporary file next to '", path,
                 "': ", std::strerror(errno));
  int write_errno = 0;
  emit([&](const uint8_t* p, uint64_t n) {
    while (n > 0 && write_errno == 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        write_errno = errno;
        return;
      }
      p += w;
      n -= static_cast<uint64_t>(w);
    }
  });
  if (write_errno == 0 && ::fsync(fd) != 0) write_errno = errno;
  // Temp files from mkstemp are 0600; give the result the usual permissions.
  if (write_errno == 0 && ::fchmod(fd, 0644) != 0) write_errno = errno;
  if (::close(fd) != 0 && write_errno == 0) write_errno = errno;
  if (write_errno == 0 && std::rename(tmpl.c_str(), path.c_str()) != 0) write_errno = errno;
  if (write_errno != 0) {
    ::unlink(tmpl.c_str());
    return Error(ErrorCode::kIo, "cannot write '", path, "': ", std::strerror(write_errno));
  }
  return Status::Ok();
}

}  // namespace chimera
