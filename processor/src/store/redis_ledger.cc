// RedisDeltaLedger (redis_ledger.h): the ledger's steps as Lua scripts over
// the record hash and the lease key of one key space.
#include "store/redis_ledger.h"

#include <unistd.h>

#include <cstdio>
#include <random>

#include "base/status.h"
#include "store/redis_tier.h"

namespace rs {
namespace store {
namespace {

// KEYS: record. ARGV: crc. -> 1 bound now or before to this crc; error otherwise.
const char* kBind =
    "local b = redis.call('HGET', KEYS[1], 'base_crc32c')\n"
    "if b and b ~= ARGV[1] then return redis.error_reply('BOUND ' .. b) end\n"
    "if not b then redis.call('HSET', KEYS[1], 'base_crc32c', ARGV[1], 'applied_sequence', '0', 'applying', '0') end\n"
    "return 1\n";

// KEYS: record, lease. ARGV: seq, crc, token, lease_ms.
// -> {code, detail}: 1 claimed; 0 applied already; 2 busy (detail: holder);
//    -1 unbound; -2 other base (detail: its crc); -3 record behind (detail: applied).
const char* kClaim =
    "local b = redis.call('HGET', KEYS[1], 'base_crc32c')\n"
    "if not b then return {-1, ''} end\n"
    "if b ~= ARGV[2] then return {-2, b} end\n"
    "local seq = tonumber(ARGV[1])\n"
    "local applied = tonumber(redis.call('HGET', KEYS[1], 'applied_sequence') or '0')\n"
    "if applied >= seq then return {0, tostring(applied)} end\n"
    "if applied + 1 ~= seq then return {-3, tostring(applied)} end\n"
    "if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then\n"
    "  return {2, redis.call('GET', KEYS[2]) or ''}\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'applying', ARGV[1])\n"
    "return {1, ''}\n";

// KEYS: record, lease. ARGV: seq, token, dense_seq (0: none).
// -> 1 recorded; 0 the lease is not ours.
const char* kCommit =
    "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end\n"
    "local applied = tonumber(redis.call('HGET', KEYS[1], 'applied_sequence') or '0')\n"
    "if applied < tonumber(ARGV[1]) then\n"
    "  redis.call('HSET', KEYS[1], 'applied_sequence', ARGV[1])\n"
    "end\n"
    "local dense = tonumber(redis.call('HGET', KEYS[1], 'dense_sequence') or '0')\n"
    "if dense < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'dense_sequence', ARGV[3]) end\n"
    "redis.call('HSET', KEYS[1], 'applying', '0')\n"
    "redis.call('DEL', KEYS[2])\n"
    "return 1\n";

// KEYS: lease. ARGV: token.
const char* kRelease =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

std::string NewToken() {
  std::random_device rd;
  char b[64];
  std::snprintf(b, sizeof b, "%d-%08x%08x", static_cast<int>(::getpid()), rd(), rd());
  return b;
}

uint64_t ToU64(const RedisReply& r) {
  if (r.kind == RedisReply::kInteger) return static_cast<uint64_t>(r.integer);
  if (r.kind == RedisReply::kString) return std::strtoull(r.str.c_str(), nullptr, 10);
  return 0;
}

}  // namespace

RedisDeltaLedger::RedisDeltaLedger(RedisCluster* cluster, std::string model,
                                   std::function<std::string()> active_space, std::mutex* hold_mu,
                                   std::function<void()> sync_held)
    : cluster_(cluster),
      model_(std::move(model)),
      active_space_(std::move(active_space)),
      hold_mu_(hold_mu),
      sync_held_(std::move(sync_held)) {}

void RedisDeltaLedger::Bind(RedisCluster* cluster, const std::string& model, const std::string& space,
                            const std::string& base_crc32c) {
  if (base_crc32c.size() != 8 || base_crc32c.find_first_not_of("0123456789abcdef") != std::string::npos)
    Fail(RS_ERR_INVALID_ARGUMENT, "bind_base: the argument must be the bundle.json CRC-32C as 8 lowercase hex digits");
  try {
    cluster->Command({"EVAL", kBind, "1", redis_keys::DeltaRecord(model, space), base_crc32c}, 3);
  } catch (const Error& e) {
    const std::string m = e.what();
    const size_t at = m.find("BOUND ");
    if (at == std::string::npos) throw;
    Fail(RS_ERR_FAILED_PRECONDITION, "bind_base: redis key space '" + space + "' of model '" + model +
                                         "' is bound to another bundle (bundle.json CRC-32C " +
                                         m.substr(at + 6, 8) + ", not " + base_crc32c + ")");
  }
}

std::string RedisDeltaLedger::ActiveOrFail() {
  std::string s = active_space_();
  if (s.empty()) Fail(RS_ERR_FAILED_PRECONDITION, "redis model '" + model_ + "' has no active key space");
  return s;
}

std::unique_lock<std::mutex> RedisDeltaLedger::Hold() { return std::unique_lock<std::mutex>(*hold_mu_); }

DeltaLedgerState RedisDeltaLedger::Read() {
  DeltaLedgerState st;
  st.space = ActiveOrFail();
  RedisReply r = cluster_->Command({"HGETALL", redis_keys::DeltaRecord(model_, st.space)});
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    const std::string& f = r.elements[i].str;
    if (f == "base_crc32c") st.base_crc32c = r.elements[i + 1].str;
    else if (f == "applied_sequence") st.applied_sequence = ToU64(r.elements[i + 1]);
    else if (f == "applying") st.applying = ToU64(r.elements[i + 1]);
    else if (f == "dense_sequence") st.dense_sequence = ToU64(r.elements[i + 1]);
  }
  return st;
}

DeltaClaim RedisDeltaLedger::Claim(uint64_t seq, const std::string& base_crc32c, int lease_ms,
                                   std::string* token) {
  const std::string space = ActiveOrFail();
  *token = NewToken();
  RedisReply r = cluster_->Command({"EVAL", kClaim, "2", redis_keys::DeltaRecord(model_, space),
                                    redis_keys::DeltaLease(model_, space), std::to_string(seq), base_crc32c,
                                    *token, std::to_string(lease_ms > 0 ? lease_ms : 1)},
                                   3);
  if (r.kind != RedisReply::kArray || r.elements.size() != 2)
    Fail(RS_ERR_IO, "delta ledger: unexpected reply to the claim script");
  const long long code = r.elements[0].integer;
  const std::string& detail = r.elements[1].str;
  const std::string where = "redis key space '" + space + "' of model '" + model_ + "'";
  switch (code) {
    case 1: return DeltaClaim::kClaimed;
    case 0: return DeltaClaim::kApplied;
    case 2: return DeltaClaim::kBusy;
    case -1:
      Fail(RS_ERR_FAILED_PRECONDITION, where + " was bound to no bundle by its export (export it "
                                                "again: deltas need the export's binding)");
    case -2:
      Fail(RS_ERR_FAILED_PRECONDITION, where + " holds the rows of another export (bundle.json CRC-32C " +
                                           detail + ", this bundle's is " + base_crc32c + ")");
    case -3:
      Fail(RS_ERR_FAILED_PRECONDITION, where + " has applied deltas up to " + detail + ", not up to " +
                                           std::to_string(seq - 1));
    default: Fail(RS_ERR_IO, "delta ledger: unexpected claim result " + std::to_string(code));
  }
}

bool RedisDeltaLedger::Commit(uint64_t seq, uint64_t dense_sequence, const std::string& token) {
  const std::string space = ActiveOrFail();
  RedisReply r = cluster_->Command({"EVAL", kCommit, "2", redis_keys::DeltaRecord(model_, space),
                                    redis_keys::DeltaLease(model_, space), std::to_string(seq), token,
                                    std::to_string(dense_sequence)},
                                   3);
  return r.kind == RedisReply::kInteger && r.integer == 1;
}

void RedisDeltaLedger::Release(const std::string& token) {
  try {
    const std::string space = active_space_();
    if (space.empty()) return;
    cluster_->Command({"EVAL", kRelease, "1", redis_keys::DeltaLease(model_, space), token}, 3);
  } catch (...) {
    // the lease expires by itself
  }
}

void RedisDeltaLedger::Sync() { sync_held_(); }

}  // namespace store
}  // namespace rs
