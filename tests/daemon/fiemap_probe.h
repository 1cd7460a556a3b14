// FIEMAP as a test oracle: how much of a file sits in unwritten extents.
#pragma once

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace fern::testing {

// Bytes of `path` in unwritten extents (FIEMAP), or -1 when the file system
// does not say.
inline int64_t UnwrittenBytes(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  constexpr unsigned kMax = 256;
  std::vector<uint64_t> buf((sizeof(fiemap) + kMax * sizeof(fiemap_extent)) / 8 + 1);
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  int64_t unwritten = 0;
  for (uint64_t at = 0;;) {
    std::fill(buf.begin(), buf.end(), 0);
    map->fm_start = at;
    map->fm_length = FIEMAP_MAX_OFFSET - at;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kMax;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      close(fd);
      return -1;
    }
    if (map->fm_mapped_extents == 0) break;
    const fiemap_extent& last = map->fm_extents[map->fm_mapped_extents - 1];
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      if (map->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) unwritten += map->fm_extents[i].fe_length;
    }
    if (last.fe_flags & FIEMAP_EXTENT_LAST) break;
    at = last.fe_logical + last.fe_length;
  }
  close(fd);
  return unwritten;
}

}  // namespace fern::testing
