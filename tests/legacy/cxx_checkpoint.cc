// A C++ program that checkpoints the way many simulation codes do, with
// std::ofstream and restarts with std::ifstream, and knows nothing of
// fern-ec. The legacy tests run it under the preload and on plain tmpfs.
//   cxx_checkpoint write FILE N SEED   a text header line, then N doubles
//                                      written in uneven chunks
//   cxx_checkpoint read FILE           reads it back and prints
//                                      "N <sum of the doubles> <fnv64 of the payload>"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace {

uint64_t Fnv64(const char* p, size_t n, uint64_t h = 1469598103934665603ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

int Write(const char* path, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> v(n);
  for (auto& x : v) x = static_cast<double>(rng() >> 11) / 9007199254740992.0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    std::perror(path);
    return 1;
  }
  out << "cxx-checkpoint " << n << "\n";
  // Uneven chunks, so stdio-like buffering in libstdc++ is exercised both
  // through its buffer and with direct writes of large blocks.
  size_t at = 0;
  for (size_t chunk = 1; at < n; chunk = chunk * 3 + 7) {
    size_t take = std::min(chunk, n - at);
    out.write(reinterpret_cast<const char*>(v.data() + at), static_cast<std::streamsize>(take * sizeof(double)));
    at += take;
  }
  out.close();
  if (!out) {
    std::perror("close");
    return 1;
  }
  return 0;
}

int Read(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::string magic;
  size_t n = 0;
  if (!(in >> magic >> n) || magic != "cxx-checkpoint" || in.get() != '\n') {
    std::cerr << path << ": not a checkpoint\n";
    return 1;
  }
  std::vector<double> v(n);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(double)));
  if (static_cast<size_t>(in.gcount()) != n * sizeof(double) || in.peek() != EOF) {
    std::cerr << path << ": short or long checkpoint\n";
    return 1;
  }
  double sum = 0;
  for (double x : v) sum += x;
  std::printf("%zu %.17g %016llx\n", n, sum,
              static_cast<unsigned long long>(Fnv64(reinterpret_cast<const char*>(v.data()), n * sizeof(double))));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "write" && argc == 5) return Write(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10));
  if (mode == "read" && argc == 3) return Read(argv[2]);
  std::cerr << "usage: cxx_checkpoint write FILE N SEED | read FILE\n";
  return 2;
}
