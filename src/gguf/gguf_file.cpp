#include "gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>

namespace chimera {

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
      return "UINT8";
    case GgufValueType::INT8:
      return "INT8";
    case GgufValueType::UINT16:
      return "UINT16";
    case GgufValueType::INT16:
      return "INT16";
    case GgufValueType::UINT32:
      return "UINT32";
    case GgufValueType::INT32:
      return "INT32";
    case GgufValueType::FLOAT32:
      return "FLOAT32";
    case GgufValueType::BOOL:
      return "BOOL";
    case GgufValueType::STRING:
      return "STRING";
    case GgufValueType::ARRAY:
      return "ARRAY";
    case GgufValueType::UINT64:
      return "UINT64";
    case GgufValueType::INT64:
      return "INT64";
    case GgufValueType::FLOAT64:
      return "FLOAT64";
  }
  return "?";
}

std::optional<GgufValueType> gguf_value_type_from_name(std::string_view name) {
  for (uint32_t id = 0; id <= static_cast<uint32_t>(GgufValueType::FLOAT64); ++id) {
    auto t = static_cast<GgufValueType>(id);
    if (name == gguf_value_type_name(t)) return t;
  }
  return std::nullopt;
}

uint64_t gguf_value_type_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
      return 2;
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::FLOAT32:
      return 4;
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
    case GgufValueType::FLOAT64:
      return 8;
    case GgufValueType::STRING:
    case GgufValueType::ARRAY:
      return 0;
  }
  return 0;
}

bool gguf_value_type_is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
      return true;
    default:
      return false;
  }
}

namespace {

bool is_signed_type(GgufValueType t) {
  return t == GgufValueType::INT8 || t == GgufValueType::INT16 || t == GgufValueType::INT32 ||
         t == GgufValueType::INT64;
}

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // x86/ARM hosts are little-endian, as is GGUF
  return v;
}

// Decodes one packed numeric element into a scalar GgufValue (type, i/u/f/b).
void decode_scalar(GgufValueType t, const uint8_t* p, GgufValue& v) {
  v.type = t;
  auto set_signed = [&v](int64_t x) {
    v.i = x;
    v.u = x >= 0 ? static_cast<uint64_t>(x) : 0;
  };
  auto set_unsigned = [&v](uint64_t x) {
    v.u = x;
    v.i = x <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(x)
                                                                          : 0;
  };
  switch (t) {
    case GgufValueType::UINT8:
      set_unsigned(load_le<uint8_t>(p));
      break;
    case GgufValueType::INT8:
      set_signed(load_le<int8_t>(p));
      break;
    case GgufValueType::UINT16:
      set_unsigned(load_le<uint16_t>(p));
      break;
    case GgufValueType::INT16:
      set_signed(load_le<int16_t>(p));
      break;
    case GgufValueType::UINT32:
      set_unsigned(load_le<uint32_t>(p));
      break;
    case GgufValueType::INT32:
      set_signed(load_le<int32_t>(p));
      break;
    case GgufValueType::UINT64:
      set_unsigned(load_le<uint64_t>(p));
      break;
    case GgufValueType::INT64:
      set_signed(load_le<int64_t>(p));
      break;
    case GgufValueType::FLOAT32:
      v.f = load_le<float>(p);
      break;
    case GgufValueType::FLOAT64:
      v.f = load_le<double>(p);
      break;
    case GgufValueType::BOOL:
      v.b = *p != 0;
      v.i = v.b;
      v.u = v.b;
      break;
    case GgufValueType::STRING:
    case GgufValueType::ARRAY:
      break;
  }
}

// Bounds-checked little-endian cursor over the file. Every read names the field it is for.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& name)
      : base_(base), size_(size), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  Status error(uint64_t at, const std::string& what) const {
    return Error(ErrorCode::kFormat, name_, ": ", what, " (at byte ", at, ")");
  }

  // Makes sure n more bytes exist; `field` names what was being read.
  Status need(uint64_t n, std::string_view field) const {
    if (n > remaining())
      return error(pos_, StrCat("truncated file: ", field, " needs ", n, " bytes but only ",
                                remaining(), " remain of ", size_));
    return Status::Ok();
  }

  template <typename T>
  Status read(T& out, std::string_view field) {
    CHIMERA_RETURN_IF_ERROR(need(sizeof(T), field));
    out = load_le<T>(base_ + pos_);
    pos_ += sizeof(T);
    return Status::Ok();
  }

  // Fast path for hot loops (token arrays): false, consuming nothing, when the string does not
  // fit; the caller then calls read_string to build the error message.
  bool try_read_string(std::string_view& out) {
    if (remaining() < 8) return false;
    const uint64_t len = load_le<uint64_t>(base_ + pos_);
    if (len > remaining() - 8) return false;
    out = std::string_view(reinterpret_cast<const char*>(base_ + pos_ + 8), len);
    pos_ += 8 + len;
    return true;
  }

  Status read_string(std::string_view& out, std::string_view field) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    CHIMERA_RETURN_IF_ERROR(read(len, StrCat(field, " length")));
    if (len > remaining()) {
      pos_ = at;
      return error(at, StrCat(field, " length ", len, " exceeds the ", remaining(),
                              " bytes left in the file"));
    }
    out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return Status::Ok();
  }

  const uint8_t* here() const { return base_ + pos_; }
  void skip(uint64_t n) { pos_ += n; }  // callers checked need(n) first

 private:
  const uint8_t* base_;
  uint64_t size_;
  const std::string& name_;
  uint64_t pos_ = 0;
};

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxNameLength = 63;      // GGML_MAX_NAME - 1 (llama.cpp rejects longer)
constexpr uint32_t kMaxDims = 4;
// Smallest possible records: key length + empty key is rejected, so 8 + 1 + type 4 + 1 byte value.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
// name length + 1 byte name + n_dims + type + offset (n_dims may be 0).
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;

// Value-type id as read from the file; rejects ids that are not GGUF value types.
Status check_value_type(const Cursor& c, uint64_t at, uint32_t id, const std::string& what) {
  if (id > static_cast<uint32_t>(GgufValueType::FLOAT64))
    return c.error(at, StrCat(what, ": unknown value type id ", id));
  return Status::Ok();
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

bool is_power_of_two(uint64_t x) {
  return x != 0 && (x & (x - 1)) == 0;
}

}  // namespace

std::string GgufTensorInfo::shape_string() const {
  std::string s = "{";
  for (uint32_t d = 0; d < n_dims; ++d) {
    if (d) s += ", ";
    s += std::to_string(ne[d]);
  }
  return s + "}";
}

GgufFile::~GgufFile() {
  if (mapped_ && base_ != nullptr) munmap(const_cast<uint8_t*>(base_), size_);
}

namespace {

// MemAvailable from /proc/meminfo, in bytes (0 when unknown).
uint64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

struct ReadResult {
  bool ok = true;
  uint64_t at = 0;  // where a failed read stopped
  int err = 0;      // its errno, 0 for an early end of file
};

// Reads bytes [begin, end) of fd into dst + begin.
ReadResult read_span(int fd, uint8_t* dst, uint64_t begin, uint64_t end) {
  for (uint64_t at = begin; at < end;) {
    const ssize_t n = ::pread(fd, dst + at, end - at, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {false, at, n < 0 ? errno : 0};
    at += static_cast<uint64_t>(n);
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path, GgufLoad how) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return Error(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo, "cannot open '", path,
                 "': ", std::strerror(err));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Error(ErrorCode::kIo, "cannot stat '", path, "': ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(ErrorCode::kIo, "'", path, "' is not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 24) {
    ::close(fd);
    return Error(ErrorCode::kFormat, path, ": not a GGUF file (", size,
                 " bytes, smaller than the 24-byte header)");
  }
  if (how == GgufLoad::kAuto) {
    const uint64_t avail = available_memory();
    how = transparent_huge_pages_available() && avail != 0 && size <= avail / 2 ? GgufLoad::kCopy
                                                                                : GgufLoad::kMap;
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->size_ = size;
  if (how == GgufLoad::kCopy) {
    Result<LargeBuffer> buf = LargeBuffer::allocate(size);
    if (!buf.ok()) {
      ::close(fd);
      return Error(ErrorCode::kOutOfMemory, "cannot load '", path, "' into memory (", size,
                   " bytes): ", buf.status().message(), "; --mmap maps it instead");
    }
    f->copy_ = std::move(buf).value();
    // Two readers, each on its half: the copy's cost is mostly first touches of fresh pages
    // (zeroing, and in a VM the host backing them), which the two cores then share.
    const uint64_t half = size / 2 / LargeBuffer::kHugePage * LargeBuffer::kHugePage;
    ReadResult second;
    std::thread helper;
    if (half > 0)
      helper = std::thread([&] { second = read_span(fd, f->copy_.data(), half, size); });
    const ReadResult first = read_span(fd, f->copy_.data(), 0, half > 0 ? half : size);
    if (helper.joinable()) helper.join();
    for (const ReadResult& r : {first, second}) {
      if (r.ok) continue;
      ::close(fd);
      return Error(
          ErrorCode::kIo, "cannot read '", path, "' at byte ", r.at, " of ", size, ": ",
          r.err != 0 ? std::strerror(r.err) : "the file ended early (changed while read?)");
    }
    ::close(fd);
    f->base_ = f->copy_.data();
  } else {
    void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    ::close(fd);  // the mapping keeps the file alive
    if (map == MAP_FAILED)
      return Error(ErrorCode::kIo, "cannot mmap '", path, "': ", std::strerror(map_err));
    f->base_ = static_cast<const uint8_t*>(map);
    f->mapped_ = true;  // the destructor unmaps, also when parsing fails below
  }
  CHIMERA_RETURN_IF_ERROR(f->parse());
  return f;
}

Result<std::unique_ptr<GgufFile>> GgufFile::from_buffer(const uint8_t* data, size_t size,
                                                        std::string name) {
  if (data == nullptr && size != 0)
    return Error(ErrorCode::kInvalidArgument, name, ": null buffer of size ", size);
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(name);
  f->base_ = data;
  f->size_ = size;
  CHIMERA_RETURN_IF_ERROR(f->parse());
  return f;
}

Status GgufFile::parse() {
  static const uint8_t kEmpty = 0;
  Cursor c(base_ != nullptr ? base_ : &kEmpty, size_, path_);

  uint32_t magic = 0;
  if (size_ < 4) return c.error(0, StrCat("not a GGUF file: only ", size_, " bytes"));
  CHIMERA_RETURN_IF_ERROR(c.read(magic, "magic"));
  if (magic != kGgufMagic) {
    return c.error(
        0, StrCat("not a GGUF file: magic bytes are not \"GGUF\" (read 0x", std::hex, magic, ")"));
  }
  CHIMERA_RETURN_IF_ERROR(c.read(version_, "version"));
  if (version_ != 2 && version_ != 3) {
    return Error(ErrorCode::kUnsupported, path_, ": GGUF version ", version_,
                 " is not supported (only 2 and 3) (at byte 4)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  const uint64_t n_tensors_at = c.pos();
  CHIMERA_RETURN_IF_ERROR(c.read(n_tensors, "tensor count"));
  const uint64_t n_kv_at = c.pos();
  CHIMERA_RETURN_IF_ERROR(c.read(n_kv, "metadata count"));
  // Counts are i64 in the spec: a negative one is as absurd as one the file cannot hold.
  if (n_kv > c.remaining() / kMinKvBytes)
    return c.error(n_kv_at,
                   StrCat("absurd metadata count ", static_cast<int64_t>(n_kv), ": the remaining ",
                          c.remaining(), " bytes cannot hold that many key/value records"));
  if (n_tensors > c.remaining() / kMinTensorInfoBytes)
    return c.error(n_tensors_at, StrCat("absurd tensor count ", static_cast<int64_t>(n_tensors),
                                        ": the remaining ", c.remaining(),
                                        " bytes cannot hold that many tensor-info records"));

  // ---- metadata ----
  kvs_.reserve(n_kv);
  kv_index_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    GgufKV kv;
    kv.file_offset = c.pos();
    std::string_view key;
    CHIMERA_RETURN_IF_ERROR(c.read_string(key, StrCat("key of metadata record #", k)));
    if (key.empty())
      return c.error(kv.file_offset, StrCat("metadata record #", k, " has an empty key"));
    if (!kv_index_.emplace(key, kvs_.size()).second)
      return c.error(kv.file_offset, StrCat("duplicate metadata key '", key, "'"));
    kv.key = std::string(key);
    const std::string what = StrCat("metadata '", kv.key, "'");
    uint32_t type_id = 0;
    const uint64_t type_at = c.pos();
    CHIMERA_RETURN_IF_ERROR(c.read(type_id, StrCat(what, " value type")));
    CHIMERA_RETURN_IF_ERROR(check_value_type(c, type_at, type_id, what));
    GgufValue& v = kv.value;
    v.type = static_cast<GgufValueType>(type_id);
    if (v.type == GgufValueType::STRING) {
      CHIMERA_RETURN_IF_ERROR(c.read_string(v.str, StrCat(what, " string")));
    } else if (v.type == GgufValueType::ARRAY) {
      uint32_t elem_id = 0;
      const uint64_t elem_at = c.pos();
      CHIMERA_RETURN_IF_ERROR(c.read(elem_id, StrCat(what, " array element type")));
      CHIMERA_RETURN_IF_ERROR(check_value_type(c, elem_at, elem_id, what));
      v.elem_type = static_cast<GgufValueType>(elem_id);
      if (v.elem_type == GgufValueType::ARRAY)
        return c.error(elem_at, StrCat(what, ": nested arrays are not allowed"));
      const uint64_t count_at = c.pos();
      CHIMERA_RETURN_IF_ERROR(c.read(v.count, StrCat(what, " array length")));
      if (v.elem_type == GgufValueType::STRING) {
        // Each string needs at least its 8-byte length.
        if (v.count > c.remaining() / 8)
          return c.error(count_at, StrCat(what, ": array of ", v.count,
                                          " strings (8 bytes or more each) exceeds the ",
                                          c.remaining(), " bytes left in the file"));
        v.strs.resize(v.count);
        for (uint64_t e = 0; e < v.count; ++e)
          if (!c.try_read_string(v.strs[e]))
            CHIMERA_RETURN_IF_ERROR(c.read_string(v.strs[e], StrCat(what, " element ", e)));
      } else {
        const uint64_t esize = gguf_value_type_size(v.elem_type);
        if (v.count > c.remaining() / esize)
          return c.error(
              count_at, StrCat(what, ": array of ", v.count, " ", gguf_value_type_name(v.elem_type),
                               " exceeds the ", c.remaining(), " bytes left in the file"));
        v.array_data = c.here();
        c.skip(v.count * esize);
      }
    } else {
      CHIMERA_RETURN_IF_ERROR(c.need(gguf_value_type_size(v.type), what));
      decode_scalar(v.type, c.here(), v);
      c.skip(gguf_value_type_size(v.type));
    }
    kvs_.push_back(std::move(kv));
  }

  // ---- alignment ----
  alignment_ = 32;
  if (const GgufKV* a = find("general.alignment")) {
    const GgufValue& v = a->value;
    if (!gguf_value_type_is_integer(v.type))
      return c.error(a->file_offset, StrCat("general.alignment has type ",
                                            gguf_value_type_name(v.type), ", expected UINT32"));
    if (is_signed_type(v.type) && v.i < 0)
      return c.error(a->file_offset, StrCat("general.alignment ", v.i, " is negative"));
    if (!is_power_of_two(v.u))
      return c.error(a->file_offset, StrCat("general.alignment ", v.u, " is not a power of two"));
    alignment_ = v.u;
  }

  // ---- tensor infos ----
  tensors_.reserve(n_tensors);
  tensor_index_.reserve(n_tensors);
  std::vector<uint64_t> info_offsets;  // record starts, for messages about data placement
  info_offsets.reserve(n_tensors);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    const uint64_t at = c.pos();
    info_offsets.push_back(at);
    GgufTensorInfo ti;
    std::string_view name;
    CHIMERA_RETURN_IF_ERROR(c.read_string(name, StrCat("name of tensor #", t)));
    if (name.empty()) return c.error(at, StrCat("tensor #", t, " has an empty name"));
    if (name.size() > kMaxNameLength)
      return c.error(at, StrCat("tensor #", t, " name is ", name.size(), " bytes long (at most ",
                                kMaxNameLength, " allowed)"));
    if (!tensor_index_.emplace(name, tensors_.size()).second)
      return c.error(at, StrCat("duplicate tensor name '", name, "'"));
    ti.name = std::string(name);
    const std::string what = StrCat("tensor '", ti.name, "'");
    const uint64_t dims_at = c.pos();
    CHIMERA_RETURN_IF_ERROR(c.read(ti.n_dims, StrCat(what, " n_dims")));
    if (ti.n_dims > kMaxDims)
      return c.error(dims_at, StrCat(what, " has n_dims ", ti.n_dims, " (at most ", kMaxDims, ")"));
    for (uint32_t d = 0; d < ti.n_dims; ++d) {
      const uint64_t ne_at = c.pos();
      CHIMERA_RETURN_IF_ERROR(c.read(ti.ne[d], StrCat(what, " ne[", d, "]")));
      if (ti.ne[d] < 0)
        return c.error(ne_at, StrCat(what, " ne[", d, "] = ", ti.ne[d], " is negative"));
    }
    uint32_t type_id = 0;
    const uint64_t type_at = c.pos();
    CHIMERA_RETURN_IF_ERROR(c.read(type_id, StrCat(what, " type")));
    const TypeTraits* tt = type_traits(type_id);
    if (tt == nullptr) return c.error(type_at, StrCat(what, " has unknown ggml type id ", type_id));
    ti.type = tt->type;
    CHIMERA_RETURN_IF_ERROR(c.read(ti.offset, StrCat(what, " data offset")));

    // Element count and byte size, overflow-checked.
    uint64_t n = 1;
    for (int d = 0; d < 4; ++d) {
      if (mul_overflows(n, static_cast<uint64_t>(ti.ne[d]), &n) ||
          n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return c.error(dims_at, StrCat(what, " shape ", ti.shape_string(),
                                       " has more elements than fit in 64 bits"));
    }
    if (ti.ne[0] % tt->block_size != 0)
      return c.error(dims_at, StrCat(what, " ne[0] = ", ti.ne[0], " is not a multiple of the ",
                                     tt->name, " block size ", tt->block_size));
    if (mul_overflows(n / tt->block_size, tt->type_size, &ti.nbytes))
      return c.error(dims_at, StrCat(what, " byte size overflows 64 bits"));
    tensors_.push_back(std::move(ti));
  }

  // ---- data section ----
  const uint64_t infos_end = c.pos();
  uint64_t data_start = 0;
  if (infos_end > std::numeric_limits<uint64_t>::max() - (alignment_ - 1))
    return c.error(infos_end, "data section start overflows 64 bits");
  data_start = (infos_end + alignment_ - 1) / alignment_ * alignment_;
  data_offset_ = data_start;
  if (!tensors_.empty() && data_start > size_)
    return c.error(infos_end,
                   StrCat("truncated file: the data section would start at byte ", data_start,
                          " (alignment ", alignment_, ") but the file has ", size_, " bytes"));
  // Tensors lie in info order, each at the previous end padded to the alignment (spec 1.3).
  uint64_t expected = 0;
  for (size_t t = 0; t < tensors_.size(); ++t) {
    GgufTensorInfo& ti = tensors_[t];
    const uint64_t offset_field_at =
        info_offsets[t] + 8 + ti.name.size() + 4 + 8ull * ti.n_dims + 4;
    if (ti.offset != expected) {
      return c.error(
          offset_field_at,
          StrCat("tensor '", ti.name, "' data offset ", ti.offset, " but expected ", expected,
                 ": tensor data must be contiguous in info order, each "
                 "padded to the alignment ",
                 alignment_, ti.offset < expected ? " (overlaps the previous tensor)" : " (gap)"));
    }
    const uint64_t avail = size_ - data_start;
    if (ti.offset > avail || ti.nbytes > avail - ti.offset)
      return c.error(offset_field_at,
                     StrCat("truncated file: tensor '", ti.name, "' data [", data_start + ti.offset,
                            ", +", ti.nbytes, ") ends past the file size ", size_));
    ti.data = base_ + data_start + ti.offset;
    const uint64_t end = ti.offset + ti.nbytes;  // <= avail, no overflow
    const uint64_t padded = (end + alignment_ - 1) / alignment_ * alignment_;
    if (padded < end) return c.error(offset_field_at, "tensor data end overflows 64 bits");
    expected = padded;
  }
  return Status::Ok();
}

const GgufKV* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string_view GgufFile::architecture() const {
  const GgufKV* kv = find("general.architecture");
  if (kv == nullptr || kv->value.type != GgufValueType::STRING) return {};
  return kv->value.str;
}

// ---- typed accessors ----

namespace {

template <typename T>
inline constexpr bool kIsInt = std::is_integral_v<T> && !std::is_same_v<T, bool>;

// Converts a decoded scalar (type, i/u/f/b) to T, or explains why it cannot.
template <typename T>
Status convert_scalar(const GgufValue& v, std::string_view key, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (v.type == GgufValueType::BOOL) {
      out = v.b;
      return Status::Ok();
    }
    if (gguf_value_type_is_integer(v.type) && v.u <= 1 && v.i >= 0) {
      out = v.u == 1;
      return Status::Ok();
    }
    return Error(ErrorCode::kFormat, "key '", key, "' has type ", gguf_value_type_name(v.type),
                 ", expected BOOL");
  } else if constexpr (kIsInt<T>) {
    if (!gguf_value_type_is_integer(v.type) && v.type != GgufValueType::BOOL)
      return Error(ErrorCode::kFormat, "key '", key, "' has type ", gguf_value_type_name(v.type),
                   ", expected an integer");
    const bool negative = is_signed_type(v.type) && v.i < 0;
    bool fits;
    if (negative) {
      fits = std::is_signed_v<T> && v.i >= static_cast<int64_t>(std::numeric_limits<T>::min());
    } else {
      fits = v.u <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    }
    if (!fits) {
      if (negative)
        return Error(ErrorCode::kFormat, "key '", key, "' value ", v.i,
                     " does not fit the requested integer type");
      return Error(ErrorCode::kFormat, "key '", key, "' value ", v.u,
                   " does not fit the requested integer type");
    }
    out = negative ? static_cast<T>(v.i) : static_cast<T>(v.u);
    return Status::Ok();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (v.type != GgufValueType::FLOAT32 && v.type != GgufValueType::FLOAT64)
      return Error(ErrorCode::kFormat, "key '", key, "' has type ", gguf_value_type_name(v.type),
                   ", expected FLOAT32 or FLOAT64");
    out = static_cast<T>(v.f);
    return Status::Ok();
  } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view>) {
    if (v.type != GgufValueType::STRING)
      return Error(ErrorCode::kFormat, "key '", key, "' has type ", gguf_value_type_name(v.type),
                   ", expected STRING");
    out = T(v.str);
    return Status::Ok();
  } else {
    static_assert(!sizeof(T), "unsupported type for GgufFile::get");
  }
}

}  // namespace

GgufValue gguf_array_element(const GgufValue& array, uint64_t index) {
  GgufValue e;
  CHIMERA_CHECK(array.type == GgufValueType::ARRAY && index < array.count, "bad array access");
  if (array.elem_type == GgufValueType::STRING) {
    e.type = GgufValueType::STRING;
    e.str = array.strs[index];
  } else {
    decode_scalar(array.elem_type, array.array_data + index * gguf_value_type_size(array.elem_type),
                  e);
  }
  return e;
}

template <typename T>
Result<T> GgufFile::get(std::string_view key) const {
  const GgufKV* kv = find(key);
  if (kv == nullptr)
    return Error(ErrorCode::kNotFound, path_, ": missing metadata key '", key, "'");
  T out{};
  Status st = convert_scalar<T>(kv->value, key, out);
  if (!st.ok()) return Status(st.code(), StrCat(path_, ": ", st.message()));
  return out;
}

template <typename T>
Result<std::optional<T>> GgufFile::get_optional(std::string_view key) const {
  if (find(key) == nullptr) return std::optional<T>();
  CHIMERA_ASSIGN_OR_RETURN(T v, get<T>(key));
  return std::optional<T>(std::move(v));
}

template <typename T>
Result<T> GgufFile::get_or(std::string_view key, T fallback) const {
  if (find(key) == nullptr) return fallback;
  return get<T>(key);
}

template <typename T>
Result<std::vector<T>> GgufFile::get_array(std::string_view key) const {
  const GgufKV* kv = find(key);
  if (kv == nullptr)
    return Error(ErrorCode::kNotFound, path_, ": missing metadata key '", key, "'");
  const GgufValue& v = kv->value;
  if (v.type != GgufValueType::ARRAY)
    return Error(ErrorCode::kFormat, path_, ": key '", key, "' has type ",
                 gguf_value_type_name(v.type), ", expected an array");
  std::vector<T> out;
  out.reserve(v.count);
  for (uint64_t i = 0; i < v.count; ++i) {
    T x{};
    Status st = convert_scalar<T>(gguf_array_element(v, i), key, x);
    if (!st.ok()) return Status(st.code(), StrCat(path_, ": element ", i, " of ", st.message()));
    out.push_back(std::move(x));
  }
  return out;
}

Result<std::vector<std::string_view>> GgufFile::get_string_array(std::string_view key) const {
  const GgufKV* kv = find(key);
  if (kv == nullptr)
    return Error(ErrorCode::kNotFound, path_, ": missing metadata key '", key, "'");
  const GgufValue& v = kv->value;
  if (v.type != GgufValueType::ARRAY || v.elem_type != GgufValueType::STRING)
    return Error(ErrorCode::kFormat, path_, ": key '", key, "' has type ",
                 gguf_value_type_name(v.type),
                 v.type == GgufValueType::ARRAY ? StrCat(" of ", gguf_value_type_name(v.elem_type))
                                                : std::string(),
                 ", expected an array of STRING");
  return v.strs;
}

Result<std::vector<uint32_t>> GgufFile::get_per_layer(std::string_view key,
                                                      uint32_t n_layers) const {
  const GgufKV* kv = find(key);
  if (kv == nullptr)
    return Error(ErrorCode::kNotFound, path_, ": missing metadata key '", key, "'");
  if (kv->value.type != GgufValueType::ARRAY) {
    CHIMERA_ASSIGN_OR_RETURN(uint32_t v, get<uint32_t>(key));
    return std::vector<uint32_t>(n_layers, v);
  }
  if (kv->value.count != n_layers)
    return Error(ErrorCode::kFormat, path_, ": key '", key, "' has ", kv->value.count,
                 " elements, expected one per layer (", n_layers, ")");
  return get_array<uint32_t>(key);
}

#define CHIMERA_GGUF_INSTANTIATE(T)                                                    \
  template Result<T> GgufFile::get<T>(std::string_view) const;                         \
  template Result<std::optional<T>> GgufFile::get_optional<T>(std::string_view) const; \
  template Result<T> GgufFile::get_or<T>(std::string_view, T) const;

#define CHIMERA_GGUF_INSTANTIATE_ARRAY(T) \
  template Result<std::vector<T>> GgufFile::get_array<T>(std::string_view) const;

CHIMERA_GGUF_INSTANTIATE(bool)
CHIMERA_GGUF_INSTANTIATE(int8_t)
CHIMERA_GGUF_INSTANTIATE(int16_t)
CHIMERA_GGUF_INSTANTIATE(int32_t)
CHIMERA_GGUF_INSTANTIATE(int64_t)
CHIMERA_GGUF_INSTANTIATE(uint8_t)
CHIMERA_GGUF_INSTANTIATE(uint16_t)
CHIMERA_GGUF_INSTANTIATE(uint32_t)
CHIMERA_GGUF_INSTANTIATE(uint64_t)
CHIMERA_GGUF_INSTANTIATE(float)
CHIMERA_GGUF_INSTANTIATE(double)
CHIMERA_GGUF_INSTANTIATE(std::string)
CHIMERA_GGUF_INSTANTIATE(std::string_view)
CHIMERA_GGUF_INSTANTIATE_ARRAY(bool)
CHIMERA_GGUF_INSTANTIATE_ARRAY(int8_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(int16_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(int32_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(int64_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(uint8_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(uint16_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(uint32_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(uint64_t)
CHIMERA_GGUF_INSTANTIATE_ARRAY(float)
CHIMERA_GGUF_INSTANTIATE_ARRAY(double)

#undef CHIMERA_GGUF_INSTANTIATE
#undef CHIMERA_GGUF_INSTANTIATE_ARRAY

}  // namespace chimera
