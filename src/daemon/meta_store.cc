#include "daemon/meta_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "ec/crc32c.h"
#include "fern_wire.pb.h"

namespace fern::daemon {
namespace {

Status WriteAll(int fd, const void* p, size_t n, const std::string& what) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return FromErrno(errno, what);
    c += w;
    n -= static_cast<size_t>(w);
  }
  return Status();
}

std::string Frame(const wire::FileRecord& r) {
  std::string bytes = r.SerializeAsString();
  uint32_t head[2] = {static_cast<uint32_t>(bytes.size()),
                      ec::Crc32c({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()})};
  return std::string(reinterpret_cast<const char*>(head), sizeof head) + bytes;
}

Status FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FromErrno(errno, "open " + dir);
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  return rc == 0 ? Status() : FromErrno(e, "fsync " + dir);
}

class FileMetaStore final : public MetaStore {
 public:
  FileMetaStore(std::string dir) : dir_(std::move(dir)), path_(dir_ + "/meta.log") {}
  ~FileMetaStore() override {
    if (fd_ >= 0) close(fd_);
  }

  // Reads the log, keeps the good prefix, rewrites it compactly.
  Status Open() {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) return InvalidArgumentError("create " + dir_ + ": " + ec.message());
    std::string log;
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      char buf[1 << 16];
      ssize_t n;
      while ((n = read(fd, buf, sizeof buf)) > 0) log.append(buf, n);
      int e = errno;
      close(fd);
      if (n < 0) return FromErrno(e, "read " + path_);
    } else if (errno != ENOENT) {
      return FromErrno(errno, "open " + path_);
    }
    size_t at = 0;
    while (log.size() - at >= 8) {
      uint32_t head[2];
      std::memcpy(head, log.data() + at, sizeof head);
      if (head[0] > kMaxRecord || log.size() - at - 8 < head[0]) break;
      const auto* bytes = reinterpret_cast<const uint8_t*>(log.data() + at + 8);
      if (ec::Crc32c({bytes, head[0]}) != head[1]) break;
      wire::FileRecord r;
      if (!r.ParseFromArray(bytes, static_cast<int>(head[0]))) break;
      latest_[r.path()] = std::move(r);
      at += 8 + head[0];
    }
    dropped_tail_ = log.size() - at;
    // Compact: the survivors into a new file, then atomically replace.
    const std::string tmp = path_ + ".new";
    fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return FromErrno(errno, "create " + tmp);
    std::string out;
    for (const auto& [path, r] : latest_) out += Frame(r);
    Status s = WriteAll(fd, out.data(), out.size(), "write " + tmp);
    if (s.ok() && fsync(fd) != 0) s = FromErrno(errno, "fsync " + tmp);
    close(fd);
    FERN_RETURN_IF_ERROR(s);
    if (rename(tmp.c_str(), path_.c_str()) != 0) return FromErrno(errno, "rename " + tmp);
    FERN_RETURN_IF_ERROR(FsyncDir(dir_));
    fd_ = open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (fd_ < 0) return FromErrno(errno, "open " + path_);
    return Status();
  }

  Status Put(const wire::FileRecord& record) override {
    if (record.ByteSizeLong() > kMaxRecord) {
      return OutOfRangeError("metadata record of " + record.path() + " is " +
                             std::to_string(record.ByteSizeLong()) + " bytes, limit " +
                             std::to_string(kMaxRecord));
    }
    const std::string f = Frame(record);
    FERN_RETURN_IF_ERROR(WriteAll(fd_, f.data(), f.size(), "append to " + path_));
    if (fdatasync(fd_) != 0) return FromErrno(errno, "fdatasync " + path_);
    latest_[record.path()] = record;
    return Status();
  }

  StatusOr<std::vector<wire::FileRecord>> LoadAll() override {
    std::vector<wire::FileRecord> v;
    for (const auto& [p, r] : latest_) v.push_back(r);
    return v;
  }

  size_t dropped_tail() const { return dropped_tail_; }

 private:
  const std::string dir_;
  const std::string path_;
  int fd_ = -1;
  std::map<std::string, wire::FileRecord> latest_;
  size_t dropped_tail_ = 0;
};

class MemoryMetaStore final : public MetaStore {
 public:
  Status Put(const wire::FileRecord& record) override {
    latest_[record.path()] = record;
    return Status();
  }
  StatusOr<std::vector<wire::FileRecord>> LoadAll() override {
    std::vector<wire::FileRecord> v;
    for (const auto& [p, r] : latest_) v.push_back(r);
    return v;
  }

 private:
  std::map<std::string, wire::FileRecord> latest_;
};

}  // namespace

StatusOr<std::unique_ptr<MetaStore>> OpenFileMetaStore(const std::string& dir) {
  auto store = std::make_unique<FileMetaStore>(dir);
  FERN_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<MetaStore>(std::move(store));
}

std::unique_ptr<MetaStore> NewMemoryMetaStore() { return std::make_unique<MemoryMetaStore>(); }

}  // namespace fern::daemon
