#include "store/redis_tier.h"

#include <cstring>

#include "base/status.h"
#include "store/format.h"

namespace rs {
namespace store {
namespace redis_keys {

std::string RowPrefix(const std::string& model, const std::string& space) {
  return "rs:" + model + ":" + space + ":";
}
std::string Row(const std::string& model, const std::string& space, const std::string& table, int64_t id) {
  return RowPrefix(model, space) + table + ":" + std::to_string(id);
}
std::string Meta(const std::string& model, const std::string& space) { return "rsm:" + model + ":" + space; }
std::string Pointer(const std::string& model) { return "rsp:" + model; }
std::string Changes(const std::string& model, const std::string& space) { return "rsc:" + model + ":" + space; }
std::string DeltaRecord(const std::string& model, const std::string& space) {
  return "rsd:{" + model + ":" + space + "}";
}
std::string DeltaLease(const std::string& model, const std::string& space) {
  return "rsd:{" + model + ":" + space + "}:lease";
}

namespace {
uint32_t RowCrc(int64_t id, const float* row, int32_t dim) {
  uint32_t c = Crc32c(&id, 8);
  return ExtendCrc32c(c, row, 4ull * dim);
}
}  // namespace

std::string EncodeValue(int64_t id, const float* row, int32_t dim) {
  std::string v(kValueHeader + 4ull * dim, '\0');
  char* p = &v[0];
  std::memcpy(p, "RSE1", 4);
  const uint32_t d = static_cast<uint32_t>(dim);
  std::memcpy(p + 4, &d, 4);
  const uint32_t crc = RowCrc(id, row, dim);
  std::memcpy(p + 8, &crc, 4);
  std::memcpy(p + kValueHeader, row, 4ull * dim);
  return v;
}

bool DecodeValue(const std::string& v, int64_t id, int32_t dim, float* out) {
  if (v.size() != kValueHeader + 4ull * dim) return false;
  const char* p = v.data();
  if (std::memcmp(p, "RSE1", 4) != 0) return false;
  uint32_t d, crc, zero;
  std::memcpy(&d, p + 4, 4);
  std::memcpy(&crc, p + 8, 4);
  std::memcpy(&zero, p + 12, 4);
  if (d != static_cast<uint32_t>(dim) || zero != 0) return false;
  std::memcpy(out, p + kValueHeader, 4ull * dim);
  return RowCrc(id, out, dim) == crc;
}

}  // namespace redis_keys

void RedisTier::Read(const int64_t* keys, size_t n, float* out, uint8_t* state, std::string* error) {
  std::shared_ptr<const std::string> space = space_->space();
  std::vector<std::vector<std::string>> cmds(n);
  for (size_t i = 0; i < n; ++i) cmds[i] = {"GET", redis_keys::Row(model_, *space, table_, keys[i])};
  std::vector<RedisReply> replies;
  cluster_->Exec(cmds, &replies);
  for (size_t i = 0; i < n; ++i) {
    const RedisReply& r = replies[i];
    float* dst = out + i * static_cast<size_t>(dim_);
    if (r.kind == RedisReply::kNil) {
      state[i] = kRowAbsent;
    } else if (r.kind == RedisReply::kString) {
      if (redis_keys::DecodeValue(r.str, keys[i], dim_, dst)) {
        state[i] = kRowPresent;
      } else {
        state[i] = kRowCorrupt;
        if (error->empty())
          *error = "redis value of table '" + table_ + "' key " + std::to_string(keys[i]) + " (" +
                   cmds[i][1] + ") is damaged (bad header, length or checksum)";
      }
    } else {
      state[i] = kRowFailed;
      if (error->empty()) *error = r.kind == RedisReply::kError ? r.str : "unexpected reply to GET";
    }
  }
}

uint64_t RedisTier::Write(const int64_t* keys, size_t n, const float* rows) {
  std::shared_ptr<const std::string> space = space_->space();
  // SET ... GET tells new keys from overwritten ones (row counts stay exact).
  std::vector<std::vector<std::string>> cmds(n);
  for (size_t i = 0; i < n; ++i)
    cmds[i] = {"SET", redis_keys::Row(model_, *space, table_, keys[i]),
               redis_keys::EncodeValue(keys[i], rows + i * static_cast<size_t>(dim_), dim_), "GET"};
  std::vector<RedisReply> replies;
  cluster_->Exec(cmds, &replies);
  uint64_t fresh = 0;
  for (size_t i = 0; i < n; ++i) {
    if (replies[i].kind == RedisReply::kError)
      Fail(RS_ERR_IO, "redis write of table '" + table_ + "' key " + std::to_string(keys[i]) +
                          " failed: " + replies[i].str);
    if (replies[i].kind == RedisReply::kNil) ++fresh;
  }
  return fresh;
}

uint64_t RedisTier::Erase(const int64_t* keys, size_t n) {
  std::shared_ptr<const std::string> space = space_->space();
  std::vector<std::vector<std::string>> cmds(n);
  for (size_t i = 0; i < n; ++i) cmds[i] = {"DEL", redis_keys::Row(model_, *space, table_, keys[i])};
  std::vector<RedisReply> replies;
  cluster_->Exec(cmds, &replies);
  uint64_t gone = 0;
  for (size_t i = 0; i < n; ++i) {
    if (replies[i].kind == RedisReply::kError)
      Fail(RS_ERR_IO, "redis delete of table '" + table_ + "' key " + std::to_string(keys[i]) +
                          " failed: " + replies[i].str);
    gone += replies[i].kind == RedisReply::kInteger ? static_cast<uint64_t>(replies[i].integer) : 0;
  }
  return gone;
}

}  // namespace store
}  // namespace rs
