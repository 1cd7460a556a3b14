// Node: the services one fern-ec daemon runs over its Transport.
//
//   shard service     SHARD_PUT / SHARD_GET / SHARD_DELETE on this node's two
//                     ShardStores (data shards in tmpfs, parity on disk). A
//                     SHARD_PUT payload is received straight into a reserved
//                     slot (PayloadSink); a full store answers ENOSPC before
//                     any byte moves.
//   metadata service  META_PUT / META_GET: FileRecords of the paths this
//                     node owns (one of the m+1 owners by placement).
//   gateway           Put / Get of whole files on behalf of local clients.
//
// Put(path, bytes): asks the path's live metadata owners for the current
// version, stripes the bytes (StripeGeometry), encodes each stripe, sends
// the k+m shards of version+1 to their nodes (Placement; a dead home node is
// replaced by the next live one and the stripe is recorded in the record's
// `moved` list), and only when every shard of every stripe is acknowledged
// commits the new FileRecord to every live owner. Until then readers see the
// previous version, which is never overwritten: a new version's shards have
// new keys.
//
// Get(path): takes the newest record any live owner has, fetches the k data
// shards of each stripe in parallel, checks each payload's CRC32C, and on any
// missing or corrupt shard fetches the parity shards and decodes. More than
// m shards unavailable in a stripe is DataLoss naming the stripe and nodes:
// never wrong bytes.
//
// Threading: a Node lives on its transport's event loop; every method and
// callback runs there. Not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "daemon/shard_store.h"
#include "ec/erasure_coder.h"
#include "ec/stripe_geometry.h"
#include "placement/placement.h"
#include "transport/transport.h"

namespace fern::wire {
class FileRecord;
}

namespace fern::daemon {

struct NodeOptions {
  NodeId id;
  int k = 4;
  int m = 2;
  uint64_t shard_size = 1 << 20;
  std::string backend = "auto";
  std::string technique = "reed_sol_van";
  uint64_t placement_seed = 0;
  Duration rpc_timeout = std::chrono::seconds(10);
};

struct FileData {
  uint64_t version = 0;
  std::vector<uint8_t> bytes;
};

class Node {
 public:
  // REQUIRES: transport, data and parity outlive the node.
  static StatusOr<std::unique_ptr<Node>> Create(const NodeOptions& options,
                                                transport::Transport* transport,
                                                ShardStore* data, ShardStore* parity,
                                                placement::ClusterView view);
  ~Node();

  // The membership this node acts on (failure detection updates it).
  void SetView(placement::ClusterView view) { view_ = std::move(view); }
  const placement::ClusterView& view() const { return view_; }

  // Writes a new version of `path`. The bytes must stay valid (kept alive by
  // `owner`) until `done` runs.
  void Put(const std::string& path, std::span<const uint8_t> bytes,
           std::shared_ptr<const void> owner, std::function<void(Status)> done);
  void Get(const std::string& path, std::function<void(StatusOr<FileData>)> done);

  // Where GetInto writes: called once the file's size is known, returns
  // exactly `size` writable bytes that stay valid until `done` runs. Whole
  // data shards are received straight into it (no intermediate copy).
  using OutputAllocator = std::function<StatusOr<std::span<uint8_t>>(uint64_t size)>;
  struct FileInfo {
    uint64_t version = 0;
    uint64_t size = 0;
  };
  void GetInto(const std::string& path, OutputAllocator output,
               std::function<void(StatusOr<FileInfo>)> done);

  uint64_t FileIdOf(const std::string& path) const;

 private:
  struct PutOp;
  struct GetOp;
  class BufferPool;
  // Stripes of one put encoded and in flight at once.
  static constexpr int kStripeWindow = 8;
  Node(const NodeOptions& options, transport::Transport* t, ShardStore* data, ShardStore* parity,
       placement::ClusterView view, placement::Placement placement,
       std::unique_ptr<ec::ErasureCoder> coder, ec::StripeGeometry geometry);

  void InstallHandlers();
  // Newest record among the live owners' answers (NotFound if none has one).
  void LookupRecord(const std::string& path,
                    std::function<void(StatusOr<std::shared_ptr<wire::FileRecord>>)> done);
  void SendShards(const std::shared_ptr<PutOp>& op);
  void IssueStripes(const std::shared_ptr<PutOp>& op);
  Status IssueStripe(const std::shared_ptr<PutOp>& op, uint64_t stripe);
  void CommitRecord(const std::shared_ptr<PutOp>& op);
  void FetchStripe(const std::shared_ptr<GetOp>& op, uint64_t stripe, bool with_parity);
  void FinishStripe(const std::shared_ptr<GetOp>& op, uint64_t stripe);
  std::vector<NodeId> StripeNodes(const wire::FileRecord& record, uint64_t stripe) const;

  const NodeOptions options_;
  transport::Transport* const transport_;
  ShardStore* const data_;
  ShardStore* const parity_;
  placement::ClusterView view_;
  const placement::Placement placement_;
  const std::unique_ptr<ec::ErasureCoder> coder_;
  const ec::StripeGeometry geometry_;
  std::map<std::string, std::unique_ptr<wire::FileRecord>> records_;  // paths this node owns
  std::unique_ptr<BufferPool> pool_;
};

}  // namespace fern::daemon
