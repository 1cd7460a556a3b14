// Status and StatusOr<T>: errors as values, shared by every fern-ec module.
//
// A Status is a canonical code (abseil's names) plus a message that names the
// objects involved ("decode stripe 42 of /ckpt/r7: 3 shards missing, m=2").
// OK carries no message and costs one pointer. errno values, ucs_status_t and
// library return codes are converted to Status at the module edge that sees
// them, and Status is converted to errno in exactly one table (ToErrno) for the
// preload shim. No exception crosses a module boundary.
//
// Thread-safety: Status and StatusOr are values; distinct objects may be used
// from distinct threads freely.
#pragma once

#include <cassert>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace fern {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string_view message);

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  std::string_view message() const {
    return rep_ ? std::string_view(rep_->message) : std::string_view();
  }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string ToString() const;

  // Prefixes the message with context: "encode /a/b: " + message.
  Status WithContext(std::string_view context) const;

  // The exact errno a POSIX caller should see, when the canonical code is
  // too coarse (EISDIR, ENOTDIR, ENOTEMPTY, EXDEV all map to codes shared
  // with other errnos). 0: none; ToErrno then uses the code's table entry.
  // Set by FromErrno and WithErrno; kept by WithContext; does not travel
  // between daemons (the wire carries code and message).
  int errno_hint() const { return rep_ ? rep_->errno_hint : 0; }
  Status WithErrno(int err) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
    int errno_hint = 0;
  };
  std::shared_ptr<const Rep> rep_;  // null means OK; immutable, so sharing is safe
};

inline Status InvalidArgumentError(std::string_view m) { return Status(StatusCode::kInvalidArgument, m); }
inline Status NotFoundError(std::string_view m) { return Status(StatusCode::kNotFound, m); }
inline Status AlreadyExistsError(std::string_view m) { return Status(StatusCode::kAlreadyExists, m); }
inline Status PermissionDeniedError(std::string_view m) { return Status(StatusCode::kPermissionDenied, m); }
inline Status ResourceExhaustedError(std::string_view m) { return Status(StatusCode::kResourceExhausted, m); }
inline Status FailedPreconditionError(std::string_view m) { return Status(StatusCode::kFailedPrecondition, m); }
inline Status OutOfRangeError(std::string_view m) { return Status(StatusCode::kOutOfRange, m); }
inline Status UnimplementedError(std::string_view m) { return Status(StatusCode::kUnimplemented, m); }
inline Status InternalError(std::string_view m) { return Status(StatusCode::kInternal, m); }
inline Status UnavailableError(std::string_view m) { return Status(StatusCode::kUnavailable, m); }
inline Status DataLossError(std::string_view m) { return Status(StatusCode::kDataLoss, m); }
inline Status DeadlineExceededError(std::string_view m) { return Status(StatusCode::kDeadlineExceeded, m); }
inline Status AbortedError(std::string_view m) { return Status(StatusCode::kAborted, m); }
inline Status CancelledError(std::string_view m) { return Status(StatusCode::kCancelled, m); }

// errno <-> Status, the one table each way. FromErrno names the failed
// operation: FromErrno(ENOSPC, "write shard /dev/shm/x") keeps strerror text.
Status FromErrno(int err, std::string_view what);
int ToErrno(const Status& status);

// A value or the error explaining its absence. REQUIRES: constructed from a
// non-OK Status when there is no value.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "StatusOr built from OK Status without a value");
    if (status_.ok()) status_ = InternalError("StatusOr built from OK Status without a value");
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok()
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace fern

#define FERN_STATUS_CONCAT_INNER(a, b) a##b
#define FERN_STATUS_CONCAT(a, b) FERN_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function if expr yields a non-OK Status.
#define FERN_RETURN_IF_ERROR(expr)                     \
  do {                                                 \
    ::fern::Status fern_status_ = (expr);              \
    if (!fern_status_.ok()) return fern_status_;       \
  } while (0)

// FERN_ASSIGN_OR_RETURN(auto x, MakeX()); returns the error if MakeX fails.
#define FERN_ASSIGN_OR_RETURN(lhs, expr) \
  FERN_ASSIGN_OR_RETURN_IMPL(FERN_STATUS_CONCAT(fern_statusor_, __LINE__), lhs, expr)
#define FERN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
