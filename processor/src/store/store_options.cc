#include "store/store_options.h"

namespace rs {
namespace store {

namespace pb = ::recstrata::store;

ResolvedOptions ResolveOptions(const pb::StoreOptions& o) {
  ResolvedOptions r;
  auto bad = [](const std::string& m) { Fail(RS_ERR_INVALID_ARGUMENT, "store options: " + m); };
  if (o.has_create_if_missing()) r.create_if_missing = o.create_if_missing();
  if (o.has_tiers()) {
    if (o.tiers() == "dram") r.ssd_tier = false;
    else if (o.tiers() == "dram+ssd") r.ssd_tier = true;
    else bad("tiers must be \"dram\", \"dram+ssd\" or \"dram+redis\", got \"" + o.tiers() + "\"");
  }
  if (o.has_dram_capacity_bytes()) r.dram_capacity_bytes = o.dram_capacity_bytes();
  if (o.has_cache_policy()) {
    if (o.cache_policy() == "lfu") r.policy = CachePolicy::kLfu;
    else if (o.cache_policy() == "lru") r.policy = CachePolicy::kLru;
    else bad("cache_policy must be \"lfu\" or \"lru\"");
  }
  if (o.has_compaction()) {
    if (o.compaction() == "async") r.compaction = CompactionMode::kAsync;
    else if (o.compaction() == "sync") r.compaction = CompactionMode::kSync;
    else if (o.compaction() == "off") r.compaction = CompactionMode::kOff;
    else bad("compaction must be \"async\", \"sync\" or \"off\"");
  }
  if (o.has_compaction_stale_ratio()) {
    r.stale_ratio = o.compaction_stale_ratio();
    if (!(r.stale_ratio > 0 && r.stale_ratio <= 1)) bad("compaction_stale_ratio must be in (0, 1]");
  }
  if (o.has_durability()) {
    if (o.durability() == "fsync") r.fsync = true;
    else if (o.durability() == "none") r.fsync = false;
    else bad("durability must be \"fsync\" or \"none\"");
  }
  if (o.has_file_target_bytes()) {
    r.file_target_bytes = o.file_target_bytes();
    if (r.file_target_bytes < 4096 || r.file_target_bytes > (1ull << 38)) {
      bad("file_target_bytes must be in [4096, 2^38]");
    }
  }
  if (o.has_read_path()) {
    if (o.read_path() == "mmap") r.use_mmap = true;
    else if (o.read_path() == "pread") r.use_mmap = false;
    else bad("read_path must be \"mmap\" or \"pread\"");
  }
  if (o.has_shard_bits()) {
    if (o.shard_bits() > 10) bad("shard_bits must be <= 10");
    r.shard_bits = static_cast<int>(o.shard_bits());
  }
  if (o.has_skip_corrupt_records()) r.skip_corrupt = o.skip_corrupt_records();
  if (o.has_cache_admission()) {
    if (o.cache_admission() == "doorkeeper") r.doorkeeper = true;
    else if (o.cache_admission() == "always") r.doorkeeper = false;
    else bad("cache_admission must be \"doorkeeper\" or \"always\"");
  }
  if (o.has_recovery()) {
    if (o.recovery() == "strict") r.repair = false;
    else if (o.recovery() == "repair") r.repair = true;
    else if (o.recovery() == "require_clean") r.require_clean = true;
    else bad("recovery must be \"strict\", \"repair\" or \"require_clean\"");
  }
  if (o.has_redis_url() || o.has_redis_password() || o.has_redis_model() || o.has_redis_key_space() ||
      o.has_redis_connect_timeout_ms() || o.has_redis_command_timeout_ms() || o.has_redis_down_ms() ||
      o.has_redis_poll_ms())
    bad("redis_* options need tiers \"dram+redis\"");
  if (o.has_verify()) {
    if (o.verify() == "auto") r.verify_full = false;
    else if (o.verify() == "full") r.verify_full = true;
    else bad("verify must be \"auto\" or \"full\"");
  }
  return r;
}

}  // namespace store
}  // namespace rs
