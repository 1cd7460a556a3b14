// An unmodified-style updater for the PSW real-process tests: plain POSIX
// open(O_RDWR) / pwrite / close of one file, run under the preload (fern-ec
// run). Preloaded into, so it links nothing of fern-ec.
//
//   update_writer PATH WRITER WRITERS ITERS [overlap]
//
// Writer w of N owns the bytes UpdateOwned(w, N) gives (update_pattern.h):
// disjoint from every other writer's, unaligned to shards and stripes; with
// "overlap" writers 0 and 1 own the same bytes, and their patterns never
// coincide, so the preload's diff sends every byte written. Iteration i
// (1..ITERS) writes UpdatePattern over all owned bytes and closes; a close that
// fails (a node down: EAGAIN, EIO) is retried with the same bytes until it
// succeeds or 120 s pass. Prints "ok I" per committed iteration; exit 0 when
// all committed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "update_pattern.h"

namespace {

double Now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: update_writer PATH WRITER WRITERS ITERS [overlap]\n");
    return 2;
  }
  const char* path = argv[1];
  const uint64_t w = std::strtoull(argv[2], nullptr, 10), n = std::strtoull(argv[3], nullptr, 10);
  const int iters = std::atoi(argv[4]);
  const bool overlap = argc > 5 && std::strcmp(argv[5], "overlap") == 0;
  if (overlap && (w > 1 || iters >= 64)) return std::fprintf(stderr, "overlap: WRITER < 2, ITERS < 64\n"), 2;
  struct stat st;
  if (stat(path, &st) != 0) return std::fprintf(stderr, "stat %s: %s\n", path, std::strerror(errno)), 1;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const auto owned = fern::testing::UpdateOwned(w, n, size, overlap);
  std::vector<uint8_t> buf;
  for (int i = 1; i <= iters; ++i) {
    const double deadline = Now() + 120;
    for (int attempt = 0;; ++attempt) {
      int fd = open(path, O_RDWR);
      int err = fd < 0 ? errno : 0;
      for (size_t r = 0; err == 0 && r < owned.size(); ++r) {
        buf.resize(owned[r].second - owned[r].first);
        for (uint64_t off = owned[r].first; off < owned[r].second; ++off) buf[off - owned[r].first] = fern::testing::UpdatePattern(w, i, off, overlap);
        if (pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(owned[r].first)) != static_cast<ssize_t>(buf.size())) {
          err = errno;
        }
      }
      if (fd >= 0 && close(fd) != 0 && err == 0) err = errno;
      if (err == 0) {
        std::printf("ok %d\n", i);
        std::fflush(stdout);
        break;
      }
      std::printf("retry %d attempt %d: %s\n", i, attempt, std::strerror(err));
      std::fflush(stdout);
      if (Now() > deadline) return std::fprintf(stderr, "iteration %d never committed\n", i), 1;
      usleep(200 * 1000);
    }
  }
  return 0;
}
