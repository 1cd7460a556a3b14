#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace fern {
// The canonical code for an errno (the table); FromErrno adds the hint.
static Status FromErrnoCode(int err, std::string_view what);

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
  }
  return "UNKNOWN";
}

Status::Status(StatusCode code, std::string_view message) {
  if (code != StatusCode::kOk) {
    rep_ = std::make_shared<const Rep>(Rep{code, std::string(message)});
  }
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(StatusCodeName(code()));
  s += ": ";
  s += message();
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message();
  return Status(code(), m).WithErrno(errno_hint());
}

Status Status::WithErrno(int err) const {
  if (ok()) return *this;
  Status s;
  s.rep_ = std::make_shared<const Rep>(Rep{code(), std::string(message()), err});
  return s;
}

Status FromErrno(int err, std::string_view what) {
  return FromErrnoCode(err, what).WithErrno(err);
}

static Status FromErrnoCode(int err, std::string_view what) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  switch (err) {
    case 0: return Status();
    case ENOENT: return NotFoundError(m);
    case EEXIST: return AlreadyExistsError(m);
    case EACCES:
    case EPERM: return PermissionDeniedError(m);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE: return ResourceExhaustedError(m);
    case EINVAL:
    case ENAMETOOLONG:
    case EISDIR:
    case ENOTDIR:
    case EBADF: return InvalidArgumentError(m);
    case ETIMEDOUT: return DeadlineExceededError(m);
    case EAGAIN:
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case EHOSTUNREACH: return UnavailableError(m);
    case EIO: return DataLossError(m);
    case ECANCELED: return CancelledError(m);
    case ENOSYS:
    case EOPNOTSUPP: return UnimplementedError(m);
    case EROFS:
    case EBUSY:
    case ENOTEMPTY: return FailedPreconditionError(m);
    case ERANGE:
    case EFBIG:
    case EOVERFLOW: return OutOfRangeError(m);
    default: return Status(StatusCode::kUnknown, m);
  }
}

int ToErrno(const Status& status) {
  if (status.errno_hint() != 0) return status.errno_hint();
  switch (status.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kCancelled: return ECANCELED;
    case StatusCode::kUnknown: return EIO;
    case StatusCode::kInvalidArgument: return EINVAL;
    case StatusCode::kDeadlineExceeded: return ETIMEDOUT;
    case StatusCode::kNotFound: return ENOENT;
    case StatusCode::kAlreadyExists: return EEXIST;
    case StatusCode::kPermissionDenied: return EACCES;
    case StatusCode::kResourceExhausted: return ENOSPC;
    case StatusCode::kFailedPrecondition: return EBUSY;
    case StatusCode::kAborted: return EAGAIN;
    case StatusCode::kOutOfRange: return EFBIG;
    case StatusCode::kUnimplemented: return ENOSYS;
    case StatusCode::kInternal: return EIO;
    case StatusCode::kUnavailable: return EIO;
    case StatusCode::kDataLoss: return EIO;
  }
  return EIO;
}

}  // namespace fern
