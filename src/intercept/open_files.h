// The preload's table of managed open files and directories (DESIGN §2).
//
// A Node is one managed object open in this process:
//   kStaged  a file opened for writing: its bytes live in a memfd the shim
//            created; `private_fd` is the shim's own dup of it (high fd,
//            FD_CLOEXEC) so the bytes outlive the app's fds. Committed at the
//            last close of an app fd, at fsync/fdatasync, and at process
//            exit; never by a fork child (`inherited`). A file that existed
//            (opened without O_TRUNC) keeps the committed bytes it started
//            from as `base_fd`; while its size is unchanged a commit sends
//            only the byte ranges that differ from it (UPDATE), otherwise
//            the whole file (PUT).
//   kRead    a file opened for reading: the app fd is a read-only reopen of
//            the daemon's sealed GET memfd. Tracked so fstat reports the same
//            identity as stat of its path.
//   kDir     a managed directory opened as an fd: the app fd is a dup of a
//            private, already removed, empty directory, so unwrapped *at calls
//            relative to it find nothing; wrapped ones resolve via `ns`.
// Every app fd referring to a node holds one reference (dup, dup2, dup3 and
// F_DUPFD* add one, close/fclose/dup2-over drop one).
//
// Slots: g_slot[fd] says what fd is to the shim: 0 nothing, 1.. an app fd of
// node slot-1, kSlotPrivate|node the node's private fd or base fd, kSlotSocket the
// daemon socket. Readable without the lock (an atomic load: the unmanaged
// fast path); written only with g_lock held. fds >= kMaxTrackedFd are never
// tracked.
//
// REQUIRES: g_lock held and a ShimScope for every function below except
// SlotOf/IsTracked.
#pragma once

#include <sys/stat.h>

#include <cstdint>

#include "intercept/daemon_link.h"

namespace fern::intercept {

inline constexpr int kMaxTrackedFd = 1 << 16;
inline constexpr uint32_t kSlotPrivate = 0x40000000u;
inline constexpr uint32_t kSlotSocket = 0x7fffffffu;
inline constexpr uint32_t kSlotTemp = kSlotPrivate | 0x3ffffffeu;      // a GET memfd being reopened
inline constexpr uint32_t kSlotEmptyDir = kSlotPrivate | 0x3fffffffu;  // backs every kDir fd

extern uint32_t g_slot[kMaxTrackedFd];

inline uint32_t SlotOf(int fd) {
  if (fd < 0 || fd >= kMaxTrackedFd) return 0;
  return __atomic_load_n(&g_slot[fd], __ATOMIC_ACQUIRE);
}
inline bool IsTracked(int fd) { return SlotOf(fd) != 0; }
inline bool IsAppSlot(uint32_t s) { return s != 0 && s < kSlotPrivate; }

enum class NodeKind : uint8_t { kFree = 0, kStaged, kRead, kDir };

struct Node {
  NodeKind kind = NodeKind::kFree;
  int refs = 0;
  int private_fd = -1;
  int mount = 0;
  char* ns = nullptr;  // namespace path (malloc)
  uint32_t mode = 0;   // permission bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t mtime_ns = 0;  // kRead/kDir: committed mtime from the daemon
  bool inherited = false;  // staged, inherited through fork: never committed here
  bool unlinked = false;   // staged, unlinked or replaced while open: never committed
  bool dirty = true;       // staged: commit whatever clean_* say
  bool mapped = false;     // staged: mapped shared and writable (stores may
                           // leave no mtime): every close/fsync commits
  int64_t clean_size = -1; // staged: memfd size and mtime when last clean
  int64_t clean_mtime_sec = 0;
  int64_t clean_mtime_nsec = 0;
  // Staged: a sealed memfd holding the bytes of committed version
  // base_version (base_size > 0 bytes) as this process last knew them, the
  // reference an in-place update is diffed against; shim-private (high fd,
  // slot kSlotPrivate|node, FD_CLOEXEC). -1: none (a new or truncated file,
  // a size change, a full PUT since): the next commit is a PUT.
  int base_fd = -1;
  uint64_t base_version = 0;
  uint64_t base_size = 0;
};

Node* NodeAt(int idx);
// The node an app fd refers to, or -1.
int NodeOfFd(int fd);
// A fresh node with refs 0, or -1 (ENOMEM).
int NewNode(NodeKind kind, int mount, const char* ns);
// The shim's removed, empty directory (created on first use), or -1.
int EmptyDirFd();
// Frees a node no app fd refers to yet (a failed open).
void DiscardNode(int idx);
// Closes a shim-owned fd (MoveHigh) and clears its slot.
void ClosePrivate(int fd);
// A new app fd (lowest free number; FD_CLOEXEC if flags has O_CLOEXEC) for
// the managed directory ns with attributes a. Returns it, or -1 with errno.
int NewDirAppFd(int mount, const char* ns, const Attr& a, int flags);
// Records app fd `fd` as a reference to node `idx`. A stale slot (its fd was
// closed behind our back, e.g. close_range) is released first.
void Attach(int fd, int idx);
// Attach for an fd the shim just opened for the app: one beyond the tracked
// range is closed (and an unreferenced node freed) and -1 returned with
// EMFILE, since its commit could not be counted. Returns fd otherwise.
int AttachNew(int fd, int idx);
// App fd `fd` is gone (already closed by the caller). Drops its reference;
// at the last one commits a staged node and frees it. Returns 0 or the
// commit's errno.
int Detach(int fd);
// The staged node of namespace path `ns` (not unlinked), or -1.
int FindStaged(const char* ns);
// Commits a staged node if it changed since it was last clean. 0 or errno.
// With a base of the memfd's current size, the commit is an UPDATE of the
// exact byte runs that differ from it (none differ: nothing is sent), and
// the base becomes what was committed; a PUT of the whole file instead when
// the runs are more than client::kMaxUpdateRanges or cover more than half
// the file, or when the daemon answers ESTALE (the file was replaced or
// resized behind us) or EINVAL (a daemon without UPDATE). A PUT drops the
// base. `last`: no app fd refers to it any more (last close, exit). Then, in
// async mode, a PUT seals the memfd against writes (a fork child or a
// mapping left behind cannot change bytes the daemon is still encoding; if
// a writable mapping prevents the seal, the commit is synchronous) and the
// daemon answers once it holds it. UPDATE, fsync and other commits are
// always synchronous.
int CommitIfChanged(int idx, bool last = false);
// Makes `fd` (a sealed GET memfd of version `version`, `size` > 0 bytes,
// consumed) the base of staged node idx. 0 or errno (fd closed).
int SetBase(int idx, int fd, uint64_t version, uint64_t size);
// Closes the base of node idx, if any: its next commit is a PUT.
void DropBase(int idx);
// Records the staged memfd's current state as committed/unchanged.
void MarkClean(int idx);
// Moves `fd` to the private range (>= high_fd, FD_CLOEXEC) and marks its slot
// with `slot`; closes the original. Returns the new fd, or -1 with errno.
int MoveHigh(int fd, uint32_t slot);
// An app-fd slot's shim-owned fd moved: fd `from` is about to be reused by the
// app (dup2/dup3 onto it), so relocate ours first. 0 or errno.
int RelocatePrivate(int from);
// Fills st for an app fd of node idx (fd is the app fd).
int StatNodeFd(int idx, int fd, struct stat* st);
// Fills st for a staged node by path (stat of a file open for writing here).
int StatStaged(int idx, struct stat* st);
// Fills st from daemon attributes of namespace path ns.
void FillStat(const char* ns, const Attr& a, struct stat* st);

// pthread_atfork child: staged nodes become inherited.
void OpenFilesForkChild();
// Process exit: commits staged nodes still open. Takes the lock itself.
void CommitAllAtExit();
// Library init: adopts staged memfds inherited across exec (app fds whose
// memfd name says they are fern-ec staging files). Their base did not
// survive exec (FD_CLOEXEC): an adopted file is committed with PUT. Takes
// the lock itself.
void AdoptAfterExec();

}  // namespace fern::intercept
