// RedisCluster: a Redis Cluster client over hiredis (which has no cluster
// support): key -> hash slot (CRC16 of the key or of its {hash tag}, mod
// 16384), slot -> master from CLUSTER SLOTS, pipelined commands grouped per
// node, MOVED (map updated, command retried, map refreshed) and ASK (ASKING +
// retry on the importing node), connect and command timeouts.
//
// Failure model: every socket operation is bounded by the connect / command
// timeout. A node whose connect or reply fails or times out is marked down
// for `down_ms`: commands routed to it fail at once (no new timeout) until
// the period ends, then one request probes it again. A command that fails
// is reported per command (Reply::kError with the reason); nothing blocks
// longer than the timeouts of the nodes a call touches (one probe each).
//
// Threading: every method may be called from any number of threads at once.
// Each call takes connections from a per-node pool (one connection is used
// by one call at a time); the slot map is replaced copy-on-write.
#ifndef RECSTRATA_STORE_REDIS_CLUSTER_H_
#define RECSTRATA_STORE_REDIS_CLUSTER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rs {
namespace store {

// A reply, decoded from hiredis' redisReply.
struct RedisReply {
  enum Kind : uint8_t { kNil, kString, kInteger, kArray, kStatus, kError };
  Kind kind = kNil;
  std::string str;  // kString, kStatus, kError (the message)
  long long integer = 0;
  std::vector<RedisReply> elements;
};

struct RedisClusterStats {
  uint64_t commands = 0;     // commands sent (retries included)
  uint64_t round_trips = 0;  // pipelines flushed to a node and read back
  uint64_t errors = 0;       // commands that ended in an error
  uint64_t timeouts = 0;     // connects/replies that failed or timed out
  uint64_t moved = 0, ask = 0;
  uint64_t refreshes = 0;    // slot-map loads
  uint64_t fast_failures = 0;  // commands refused at once because their node was down
  uint64_t bytes_out = 0, bytes_in = 0;  // command arguments / reply payload bytes
  uint64_t nodes = 0;        // masters in the slot map
};

class RedisCluster {
 public:
  struct Options {
    std::vector<std::pair<std::string, int>> seeds;
    std::string password;
    int connect_timeout_ms = 200;
    int command_timeout_ms = 200;
    int down_ms = 1000;         // a failed node is not retried for this long
    size_t pipeline_chunk = 1024;  // commands per node per round trip
  };
  // "host:port,host:port" -> seeds; RS_ERR_INVALID_ARGUMENT when malformed.
  static std::vector<std::pair<std::string, int>> ParseSeeds(const std::string& url);
  // The hash slot of a key (with {hash tag} rules).
  static uint16_t Slot(const char* key, size_t len);

  // Connects to a seed and loads the slot map; RS_ERR_IO if no seed answers.
  explicit RedisCluster(Options options);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // One command per entry: argv[route] is the key that routes it (argv[1]
  // for GET/SET/DEL/HSET/...). Commands to one node are pipelined, all
  // nodes are written before any is read. Redirections are followed up to
  // 5 times. replies->size() == cmds.size() afterwards; a failed command
  // gets kError. Never throws for Redis or network failures.
  void Exec(const std::vector<std::vector<std::string>>& cmds, std::vector<RedisReply>* replies,
            size_t route = 1);
  // One command; throws RS_ERR_IO for a failure or an error reply.
  RedisReply Command(const std::vector<std::string>& argv, size_t route = 1);
  // Reloads the slot map now (rate-limited to one load per 50 ms).
  void Refresh();
  // One command on every master (e.g. SCAN); throws RS_ERR_IO.
  std::vector<std::string> Masters() const;
  RedisReply CommandOn(const std::string& node, const std::vector<std::string>& argv);

  RedisClusterStats Stats() const;

 private:
  struct Node;
  struct SlotMap;
  struct Conn;
  Node* NodeFor(const std::string& host, int port);
  bool LoadSlotsFrom(Node* n);
  Conn* Acquire(Node* n, std::string* err);
  void Release(Node* n, Conn* c, bool ok);
  void MarkDown(Node* n);

  Options opt_;
  mutable std::mutex nodes_mu_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;  // never erased
  std::shared_ptr<const SlotMap> map_;                  // std::atomic_load/store
  std::mutex refresh_mu_;
  std::atomic<int64_t> last_refresh_ns_{0};
  mutable std::atomic<uint64_t> commands_{0}, round_trips_{0}, errors_{0}, timeouts_{0}, moved_{0},
      ask_{0}, refreshes_{0}, fast_failures_{0}, bytes_out_{0}, bytes_in_{0};
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_REDIS_CLUSTER_H_
