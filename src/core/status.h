// Status and Result<T>: how errors cross load and API boundaries. Kernels never throw; internal
// invariants use CHIMERA_CHECK (abort with a message), not Status.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

namespace chimera {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something wrong (bad batch, bad flag)
  kNotFound,         // missing file, key, tensor
  kIo,               // the OS refused (open, mmap, read, write)
  kFormat,           // a file's content is malformed (GGUF, state file)
  kUnsupported,      // well-formed but not supported (architecture, tensor type)
  kOutOfMemory,      // a memory budget or allocation ran out
  kCancelled,
  kUnavailable,      // temporarily refused (a full queue); the caller may retry later
  kInternal,
};

const char* error_code_name(ErrorCode code);

// Concatenates anything streamable: StrCat("tensor '", name, "' at offset ", off).
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  ((os << args), ...);  // a comma fold: an empty pack is void(), not a no-effect `os`
  return os.str();
}

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "format error: ..." for printing to a user.
  std::string ToString() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

template <typename... Args>
Status Error(ErrorCode code, const Args&... args) {
  return Status(code, StrCat(args...));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Status(ErrorCode::kInternal, "Result built from OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace chimera

#define CHIMERA_CONCAT_INNER(a, b) a##b
#define CHIMERA_CONCAT(a, b) CHIMERA_CONCAT_INNER(a, b)

#define CHIMERA_RETURN_IF_ERROR(expr)          \
  do {                                         \
    ::chimera::Status _st = (expr);            \
    if (!_st.ok()) return _st;                 \
  } while (0)

#define CHIMERA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

// CHIMERA_ASSIGN_OR_RETURN(auto x, ComputeX());
#define CHIMERA_ASSIGN_OR_RETURN(lhs, expr) \
  CHIMERA_ASSIGN_OR_RETURN_IMPL(CHIMERA_CONCAT(_res_, __LINE__), lhs, expr)

// Internal invariant: a failure is a bug in chimera, not bad input.
#define CHIMERA_CHECK(cond, ...)                                                          \
  do {                                                                                    \
    if (!(cond)) ::chimera::check_failed(__FILE__, __LINE__, #cond, ::chimera::StrCat(__VA_ARGS__)); \
  } while (0)
