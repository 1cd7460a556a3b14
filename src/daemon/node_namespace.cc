// Node's namespace operations (see node.h): stat, access, list, unlink,
// rename, mkdir, rmdir over the path records held by metadata owners, and
// the collection of shards no record needs any more.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "fern_wire.pb.h"

namespace fern::daemon {

namespace internal {

bool Permits(const wire::FileRecord& r, const Caller& caller, int mask) {
  const uint32_t mode = r.mode();
  if (caller.uid == 0) {
    return !(mask & X_OK) || r.is_dir() || (mode & 0111);
  }
  uint32_t bits;
  if (caller.uid == r.uid()) {
    bits = (mode >> 6) & 7;
  } else if (caller.gid == r.gid()) {
    bits = (mode >> 3) & 7;
  } else {
    bits = mode & 7;
  }
  const uint32_t want = ((mask & R_OK) ? 4 : 0) | ((mask & W_OK) ? 2 : 0) | ((mask & X_OK) ? 1 : 0);
  return (bits & want) == want;
}

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace internal

namespace {

using transport::InMessage;
using transport::OutMessage;

// "/" and implicit directories: anyone creates, owners remove (01777).
Attr ImplicitDir() {
  Attr a;
  a.is_dir = true;
  a.mode = 01777;
  return a;
}

Attr AttrOf(const wire::FileRecord& r) {
  Attr a;
  a.is_dir = r.is_dir();
  a.size = r.size();
  a.version = r.version();
  a.uid = r.uid();
  a.gid = r.gid();
  a.mode = r.mode();
  a.mtime_ns = r.mtime_ns();
  return a;
}

Status NoEntry(const std::string& path) {
  return NotFoundError(path + ": no such file or directory");
}

wire::FileRecord Tombstone(const wire::FileRecord& of) {
  wire::FileRecord t;
  t.set_path(of.path());
  t.set_generation(of.generation() + 1);
  // The path's version counter survives its removal: a file created there
  // again never reuses a version, so a writer's stale base version (an
  // in-place update, Node::Update) cannot match the new file.
  t.set_version(of.version());
  t.set_deleted(true);
  t.set_mtime_ns(internal::NowNs());
  return t;
}

}  // namespace

void Node::ListAll(const std::string& dir,
                   std::function<void(StatusOr<std::map<std::string, bool>>)> done) {
  wire::MetaList list;
  list.set_dir(dir);
  // Every live node: the paths under a directory hash to all of them.
  GatherNewest(list, [dir, done = std::move(done)](NewestRecords newest, Answers a) {
    if (a.answered == 0) {
      return done(UnavailableError("list " + dir + ": no node answered: " + std::string(a.last_error.message())));
    }
    std::map<std::string, bool> live;
    for (auto& [path, r] : newest) {
      if (internal::Live(*r)) live[path] = r->is_dir();
    }
    done(std::move(live));
  });
}

void Node::Stat(const std::string& path, std::function<void(StatusOr<Attr>)> done) {
  if (path == "/") return done(ImplicitDir());
  LookupRecord(path, [this, path, done](StatusOr<RecordPtr> rec) {
    if (rec.ok() && internal::Live(**rec)) return done(AttrOf(**rec));
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) return done(rec.status());
    // No file: a directory if anything lives under it.
    ListAll(path, [path, done](StatusOr<std::map<std::string, bool>> under) {
      if (!under.ok()) return done(under.status());
      if (under->empty()) return done(NoEntry(path));
      done(ImplicitDir());
    });
  });
}

void Node::Access(const std::string& path, const Caller& caller, int mask,
                  std::function<void(Status)> done) {
  Stat(path, [path, caller, mask, done](StatusOr<Attr> a) {
    if (!a.ok()) return done(a.status());
    wire::FileRecord r;
    r.set_uid(a->uid);
    r.set_gid(a->gid);
    r.set_mode(a->mode);
    r.set_is_dir(a->is_dir);
    if (!internal::Permits(r, caller, mask)) {
      return done(PermissionDeniedError("access " + path + ": denied for uid " +
                                        std::to_string(caller.uid)));
    }
    done(Status());
  });
}

void Node::List(const std::string& dir,
                std::function<void(StatusOr<std::vector<DirEntry>>)> done) {
  ListAll(dir, [this, dir, done](StatusOr<std::map<std::string, bool>> under) {
    if (!under.ok()) return done(under.status());
    const size_t skip = dir == "/" ? 1 : dir.size() + 1;
    std::vector<DirEntry> entries;
    for (const auto& [path, is_dir] : *under) {
      const std::string rest = path.substr(skip);
      const size_t slash = rest.find('/');
      DirEntry e{rest.substr(0, slash), is_dir || slash != std::string::npos};
      if (!entries.empty() && entries.back().name == e.name) {
        entries.back().is_dir |= e.is_dir;  // sorted: a subtree's paths are adjacent
        continue;
      }
      entries.push_back(std::move(e));
    }
    if (!entries.empty() || dir == "/") return done(std::move(entries));
    // Empty: an explicit directory, a file, or nothing.
    Stat(dir, [dir, done](StatusOr<Attr> a) {
      if (!a.ok()) return done(a.status());
      if (!a->is_dir) {
        return done(InvalidArgumentError("list " + dir + ": not a directory").WithErrno(ENOTDIR));
      }
      done(std::vector<DirEntry>{});
    });
  });
}

void Node::Unlink(const std::string& path, const Caller& caller, std::function<void(Status)> done) {
  LookupRecord(path, [this, path, caller, done](StatusOr<RecordPtr> rec) {
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) return done(rec.status());
    if (!rec.ok() || !internal::Live(**rec)) {
      // Maybe an implicit directory; unlink of a directory is EISDIR.
      return Stat(path, [path, done](StatusOr<Attr> a) {
        if (a.ok()) return done(InvalidArgumentError("unlink " + path + ": is a directory").WithErrno(EISDIR));
        done(a.status());
      });
    }
    const wire::FileRecord old = **rec;
    if (old.is_dir()) return done(InvalidArgumentError("unlink " + path + ": is a directory").WithErrno(EISDIR));
    if (!internal::MayRemove(old, caller)) {
      return done(PermissionDeniedError("unlink " + path + ": owned by uid " +
                                        std::to_string(old.uid())));
    }
    StoreRecord(Tombstone(old), [this, old, done](Status s) {
      if (!s.ok()) return done(s.WithContext("unlink " + old.path()));
      DeleteAllVersions(old);
      done(Status());
    });
  });
}

void Node::Rename(const std::string& from, const std::string& to, const Caller& caller,
                  std::function<void(Status)> done) {
  if (from == "/" || to == "/") {
    return done(FailedPreconditionError("rename of /").WithErrno(EBUSY));
  }
  if (to.compare(0, from.size() + 1, from + "/") == 0) {
    return done(InvalidArgumentError("rename " + from + " into itself"));
  }
  LookupRecord(from, [this, from, to, caller, done](StatusOr<RecordPtr> src) {
    if (!src.ok() && src.status().code() != StatusCode::kNotFound) return done(src.status());
    if (!src.ok() || !internal::Live(**src)) {
      return Stat(from, [from, done](StatusOr<Attr> a) {
        // Moving a whole implicit tree would rewrite every record under it.
        if (a.ok()) {
          return done(UnimplementedError("rename " + from + ": directories cannot be renamed")
                          .WithErrno(EXDEV));
        }
        done(a.status());
      });
    }
    const wire::FileRecord old = **src;
    if (old.is_dir()) {
      return done(UnimplementedError("rename " + from + ": directories cannot be renamed")
                      .WithErrno(EXDEV));
    }
    if (!internal::MayRemove(old, caller)) {
      return done(PermissionDeniedError("rename " + from + ": owned by uid " +
                                        std::to_string(old.uid())));
    }
    if (from == to) return done(Status());
    LookupRecord(to, [this, old, to, caller, done](StatusOr<RecordPtr> dst) {
      if (!dst.ok() && dst.status().code() != StatusCode::kNotFound) return done(dst.status());
      std::shared_ptr<wire::FileRecord> replaced;
      if (dst.ok() && internal::Live(**dst)) {
        replaced = *dst;
        if (replaced->is_dir()) {
          return done(InvalidArgumentError("rename to " + to + ": is a directory").WithErrno(EISDIR));
        }
        if (!internal::MayRemove(*replaced, caller)) {
          return done(PermissionDeniedError("rename onto " + to + ": owned by uid " +
                                            std::to_string(replaced->uid())));
        }
      }
      // Three steps: the old name says where the file is going, the new
      // name is written (saying where it came from), the old name goes. A
      // crash between them leaves two names for the file, never none, and
      // removing either later keeps the shards the other still names
      // (DeleteVersionUnlessNamedElsewhere).
      wire::FileRecord leaving = old;
      leaving.set_renaming_to(to);
      leaving.set_generation(old.generation() + 1);
      wire::FileRecord moved = old;
      moved.clear_renaming_to();
      moved.set_renamed_from(old.path());
      moved.set_path(to);
      moved.set_generation((dst.ok() ? (*dst)->generation() : 0) + 1);
      StoreRecord(leaving, [this, leaving, moved, replaced, done](Status s) {
        if (!s.ok()) return done(s.WithContext("rename " + leaving.path()));
        StoreRecord(moved, [this, leaving, replaced, done](Status s) {
          if (!s.ok()) return done(s.WithContext("rename " + leaving.path()));
          StoreRecord(Tombstone(leaving), [this, leaving, replaced, done](Status s) {
            if (!s.ok()) return done(s.WithContext("rename " + leaving.path()));
            if (replaced) DeleteAllVersions(*replaced);
            done(Status());
          });
        });
      });
    });
  });
}

void Node::FinishCutShortRenames(const std::vector<RecordPtr>& records) {
  std::unordered_map<std::string, const wire::FileRecord*> by_path;
  for (const RecordPtr& r : records) by_path[r->path()] = r.get();
  std::map<std::string, uint64_t> seen;
  for (const RecordPtr& r : records) {
    if (!internal::Live(*r) || r->renaming_to().empty()) continue;
    auto first = placement_.Sequencer(r->path(), view_);
    if (!first.ok() || *first != options_.id) continue;  // one node per path does it
    auto to = by_path.find(r->renaming_to());
    if (to == by_path.end() || !internal::Live(*to->second) || to->second->renamed_from() != r->path() ||
        to->second->file_id() != r->file_id() || to->second->version() != r->version()) {
      continue;  // the new name was never written (or names another file since): the old one stays
    }
    auto before = rename_candidates_.find(r->path());
    if (before == rename_candidates_.end() || before->second != r->generation()) {
      seen[r->path()] = r->generation();  // the next pass decides
      continue;
    }
    std::fprintf(stderr, "fern-ec: node %u: finishing the rename of %s to %s, cut short: removing the old name\n",
                 options_.id.value, r->path().c_str(), r->renaming_to().c_str());
    StoreRecord(Tombstone(*r), [this, path = r->path()](Status s) {
      if (s.ok()) {
        ++orphans_.renames_finished;
      } else {
        std::fprintf(stderr, "fern-ec: node %u: removing %s (a rename cut short): %s\n", options_.id.value,
                     path.c_str(), s.ToString().c_str());
      }
    });
  }
  rename_candidates_ = std::move(seen);
}

void Node::Mkdir(const std::string& path, const Caller& caller, uint32_t mode,
                 std::function<void(Status)> done) {
  if (path == "/") return done(AlreadyExistsError("mkdir /: exists"));
  LookupRecord(path, [this, path, caller, mode, done](StatusOr<RecordPtr> rec) {
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) return done(rec.status());
    if (rec.ok() && internal::Live(**rec)) return done(AlreadyExistsError("mkdir " + path + ": exists"));
    const uint64_t generation = rec.ok() ? (*rec)->generation() : 0;
    ListAll(path, [this, path, caller, mode, generation, done](
                      StatusOr<std::map<std::string, bool>> under) {
      if (!under.ok()) return done(under.status());
      if (!under->empty()) return done(AlreadyExistsError("mkdir " + path + ": exists"));
      wire::FileRecord dir;
      dir.set_path(path);
      dir.set_is_dir(true);
      dir.set_generation(generation + 1);
      dir.set_file_id(NewFileId(path));
      dir.set_uid(caller.uid);
      dir.set_gid(caller.gid);
      dir.set_mode(mode & 07777);
      dir.set_mtime_ns(internal::NowNs());
      StoreRecord(dir, [path, done](Status s) { done(s.ok() ? s : s.WithContext("mkdir " + path)); });
    });
  });
}

void Node::Rmdir(const std::string& path, const Caller& caller, std::function<void(Status)> done) {
  if (path == "/") return done(FailedPreconditionError("rmdir /: the namespace root").WithErrno(EBUSY));
  LookupRecord(path, [this, path, caller, done](StatusOr<RecordPtr> rec) {
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) return done(rec.status());
    const bool have = rec.ok() && internal::Live(**rec);
    if (have && !(*rec)->is_dir()) {
      return done(InvalidArgumentError("rmdir " + path + ": not a directory").WithErrno(ENOTDIR));
    }
    ListAll(path, [this, path, caller, done, have, r = have ? *rec : nullptr](
                      StatusOr<std::map<std::string, bool>> under) {
      if (!under.ok()) return done(under.status());
      if (!under->empty()) {
        return done(FailedPreconditionError("rmdir " + path + ": not empty").WithErrno(ENOTEMPTY));
      }
      if (!have) return done(NoEntry(path));
      if (!internal::MayRemove(*r, caller)) {
        return done(PermissionDeniedError("rmdir " + path + ": owned by uid " +
                                          std::to_string(r->uid())));
      }
      StoreRecord(Tombstone(*r), [path, done](Status s) { done(s.ok() ? s : s.WithContext("rmdir " + path)); });
    });
  });
}

void Node::DeleteShards(const wire::FileRecord& layout, uint64_t stripes) {
  const int n = options_.k + options_.m;
  for (uint64_t s = 0; s < stripes; ++s) {
    const std::vector<NodeId> nodes = StripeNodes(layout, s);
    for (int i = 0; i < n && i < static_cast<int>(nodes.size()); ++i) {
      DeleteShardWhenUp(nodes[i], ShardKey{layout.file_id(), layout.version(), s, static_cast<uint32_t>(i)});
    }
  }
}

void Node::DeleteShardWhenUp(NodeId node, const ShardKey& key) {
  if (view_.IsAlive(node)) return DeleteShard(node, key, nullptr);
  // Sent when the node is heard from again (Tick): no record names its
  // copy any more.
  deferred_deletes_[node.value].push_back(key);
}

void Node::DeleteShard(NodeId node, const ShardKey& key, std::function<void(Status)> done) {
  wire::ShardDelete del;
  internal::SetId(del.mutable_id(), key.file_id, key.version, key.stripe, static_cast<int>(key.index));
  transport_->Call(node, OutMessage{wire::SHARD_DELETE, del.SerializeAsString(), {}}, {options_.rpc_timeout, nullptr},
                   [done = std::move(done)](StatusOr<InMessage> r) {
                     if (done) done(r.status());
                   });
}

void Node::DeleteAllVersions(const wire::FileRecord& record) {
  DeleteVersionUnlessNamedElsewhere(record);
  for (const auto& old : record.history()) DeleteVersionUnlessNamedElsewhere(old);
}

void Node::DeleteVersionUnlessNamedElsewhere(const wire::FileRecord& version) {
  const uint64_t stripes = geometry_.StripeCount(version.size());
  std::vector<std::string> others;
  for (const std::string& p : {version.renaming_to(), version.renamed_from()}) {
    if (!p.empty() && p != version.path()) others.push_back(p);
  }
  if (others.empty()) return DeleteShards(version, stripes);
  struct Check {
    size_t pending = 0;
    bool named = false;
    std::string where;
  };
  auto check = std::make_shared<Check>();
  check->pending = others.size();
  auto layout = std::make_shared<wire::FileRecord>(version);
  for (const std::string& other : others) {
    LookupRecord(other, [this, check, layout, stripes, other](StatusOr<RecordPtr> rec) {
      // Not knowing (an owner unreachable) counts as named: a shard too many
      // is the orphan sweep's, a shard too few is a file lost.
      const bool named = rec.ok() ? internal::Live(**rec) && internal::FindVersion(**rec, layout->file_id(),
                                                                                     layout->version()) != nullptr
                                  : rec.status().code() != StatusCode::kNotFound;
      if (named && !check->named) {
        check->named = true;
        check->where = other;
      }
      if (--check->pending > 0) return;
      if (!check->named) return DeleteShards(*layout, stripes);
      std::fprintf(stderr, "fern-ec: node %u: the shards of file %llu version %llu stay: %s still names them "
                   "(a rename cut short)\n", options_.id.value, static_cast<unsigned long long>(layout->file_id()),
                   static_cast<unsigned long long>(layout->version()), check->where.c_str());
    });
  }
}

}  // namespace fern::daemon
