// MetaStore: where a metadata owner keeps the FileRecords it owns, so they
// survive a daemon restart (DESIGN §3: metadata lives on the parity disk).
//
// Contract:
//   Put(record)  durable when it returns OK (the file store fsyncs), so an
//                owner acknowledges META_PUT only after the record is safe.
//                A record replaces any older one of the same path; the caller
//                decides ordering (generation) before calling.
//   LoadAll()    every path's last stored record, tombstones included.
//
// FileMetaStore: an append-only log `meta.log` in `dir`, one frame per Put:
//   [u32 length][u32 crc32c of the bytes][serialized FileRecord]
// Opening reads the log, stops at the first torn or corrupt frame (a crash
// mid-append), and rewrites the survivors compactly (write new file, fsync,
// rename, fsync dir), so the log never grows past one frame per live path
// plus what was appended since the last start. Larger than kMaxRecord is
// refused.
//
// NewMemoryMetaStore: the same contract in memory, for deterministic tests.
//
// Threading: not thread-safe; the owning Node calls it from its event loop.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace fern::wire {
class FileRecord;
}

namespace fern::daemon {

class MetaStore {
 public:
  static constexpr size_t kMaxRecord = 16 << 20;
  virtual ~MetaStore() = default;
  virtual Status Put(const wire::FileRecord& record) = 0;
  virtual StatusOr<std::vector<wire::FileRecord>> LoadAll() = 0;
};

StatusOr<std::unique_ptr<MetaStore>> OpenFileMetaStore(const std::string& dir);
std::unique_ptr<MetaStore> NewMemoryMetaStore();

}  // namespace fern::daemon
