// checkpoint_writer: the "legacy program" of ec_bench preload. It knows
// nothing of fern-ec: it writes a checkpoint with plain open/write/close the
// way a simulation rank does, or reads one back and checks every byte, and
// prints how long the program itself spent (process start-up excluded).
//   checkpoint_writer write PATH SIZE [--fsync]   -> "seconds S"
//   checkpoint_writer verify PATH SIZE            -> "seconds S" (exit 1 on a mismatch)
//   checkpoint_writer meta DIR N                  -> "seconds S" for N rounds of
//       stat, open(O_CREAT|O_TRUNC), 4 KiB write, close, stat, unlink in DIR: the
//       path calls every wrapper of the preload sees, for its pass-through cost
// The bytes are a fixed function of the offset, so a reader needs no copy.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr size_t kChunk = 1 << 20;  // what a rank's write loop typically hands the kernel

void Fill(uint8_t* p, uint64_t offset, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = ((offset + i) * 0x9E3779B97F4A7C15ull) ^ ((offset + i) >> 7);
    std::memcpy(p + i, &v, n - i < 8 ? n - i : 8);
  }
}

int Fail(const char* what, const char* path) {
  std::fprintf(stderr, "checkpoint_writer: %s %s: %s\n", what, path, std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: checkpoint_writer write|verify PATH SIZE [--fsync]\n");
    return 2;
  }
  const std::string mode = argv[1];
  const char* path = argv[2];
  if (mode == "meta") {
    const long rounds = std::strtol(argv[3], nullptr, 10);
    const std::string file = std::string(path) + "/meta-probe";
    char block[4096] = {1};
    struct stat st;
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < rounds; ++i) {
      (void)stat(file.c_str(), &st);
      int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return Fail("open", file.c_str());
      if (write(fd, block, sizeof block) != static_cast<ssize_t>(sizeof block)) return Fail("write", file.c_str());
      if (close(fd) != 0) return Fail("close", file.c_str());
      if (stat(file.c_str(), &st) != 0 || unlink(file.c_str()) != 0) return Fail("stat/unlink", file.c_str());
    }
    std::printf("seconds %.6f\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  }
  const uint64_t size = std::strtoull(argv[3], nullptr, 10);
  const bool sync = argc > 4 && std::strcmp(argv[4], "--fsync") == 0;
  // The whole pattern, prepared before the clock starts: a rank's state is
  // already in memory when it checkpoints.
  std::vector<uint8_t> buf(size);
  Fill(buf.data(), 0, size);
  std::vector<uint8_t> in(mode == "verify" ? kChunk : 0);
  const auto t0 = std::chrono::steady_clock::now();
  if (mode == "write") {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Fail("open", path);
    for (uint64_t at = 0; at < size;) {
      ssize_t w = write(fd, buf.data() + at, size - at < kChunk ? size - at : kChunk);
      if (w <= 0) return Fail("write", path);
      at += static_cast<uint64_t>(w);
    }
    if (sync && fsync(fd) != 0) return Fail("fsync", path);
    if (close(fd) != 0) return Fail("close", path);  // fern-ec's commit point
  } else if (mode == "verify") {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Fail("open", path);
    uint64_t at = 0;
    while (true) {
      ssize_t r = read(fd, in.data(), kChunk);
      if (r < 0) return Fail("read", path);
      if (r == 0) break;
      if (at + static_cast<uint64_t>(r) > size || std::memcmp(in.data(), buf.data() + at, static_cast<size_t>(r)) != 0) {
        std::fprintf(stderr, "checkpoint_writer: %s differs near offset %llu\n", path,
                     static_cast<unsigned long long>(at));
        return 1;
      }
      at += static_cast<uint64_t>(r);
    }
    close(fd);
    if (at != size) {
      std::fprintf(stderr, "checkpoint_writer: %s has %llu bytes, expected %llu\n", path,
                   static_cast<unsigned long long>(at), static_cast<unsigned long long>(size));
      return 1;
    }
  } else {
    std::fprintf(stderr, "checkpoint_writer: unknown mode %s\n", mode.c_str());
    return 2;
  }
  std::printf("seconds %.6f\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
