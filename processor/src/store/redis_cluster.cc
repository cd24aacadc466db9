#include "store/redis_cluster.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/status.h"

namespace rs {
namespace store {
namespace {

constexpr int kSlots = 16384;

// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum
// Redis Cluster hashes keys with.
struct Crc16Table {
  uint16_t t[256];
  Crc16Table() {
    for (int i = 0; i < 256; ++i) {
      uint16_t c = static_cast<uint16_t>(i << 8);
      for (int b = 0; b < 8; ++b) c = (c & 0x8000) ? static_cast<uint16_t>((c << 1) ^ 0x1021) : static_cast<uint16_t>(c << 1);
      t[i] = c;
    }
  }
};
const Crc16Table kCrc16;

uint16_t Crc16(const char* p, size_t n) {
  uint16_t crc = 0;
  for (size_t i = 0; i < n; ++i)
    crc = static_cast<uint16_t>((crc << 8) ^ kCrc16.t[((crc >> 8) ^ static_cast<uint8_t>(p[i])) & 0xff]);
  return crc;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

timeval Tv(int ms) {
  timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

void Decode(const redisReply* r, RedisReply* out, uint64_t* bytes) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out->kind = RedisReply::kString;
      out->str.assign(r->str, r->len);
      *bytes += r->len;
      break;
    case REDIS_REPLY_STATUS:
      out->kind = RedisReply::kStatus;
      out->str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out->kind = RedisReply::kError;
      out->str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out->kind = RedisReply::kInteger;
      out->integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out->kind = RedisReply::kArray;
      out->elements.resize(r->elements);
      for (size_t i = 0; i < r->elements; ++i) Decode(r->element[i], &out->elements[i], bytes);
      break;
    default:
      out->kind = RedisReply::kNil;
  }
}

RedisReply ErrorReply(const std::string& msg) {
  RedisReply r;
  r.kind = RedisReply::kError;
  r.str = msg;
  return r;
}

bool StartsWith(const std::string& s, const char* p) { return s.compare(0, std::strlen(p), p) == 0; }

// "MOVED 3999 127.0.0.1:6381" -> slot, host, port.
bool ParseRedirect(const std::string& s, int* slot, std::string* host, int* port) {
  size_t a = s.find(' ');
  if (a == std::string::npos) return false;
  size_t b = s.find(' ', a + 1);
  if (b == std::string::npos) return false;
  *slot = std::atoi(s.c_str() + a + 1);
  std::string addr = s.substr(b + 1);
  size_t c = addr.rfind(':');
  if (c == std::string::npos) return false;
  *host = addr.substr(0, c);  // "" (no announced address): the node that answered
  *port = std::atoi(addr.c_str() + c + 1);
  return *port > 0 && *slot >= 0 && *slot < kSlots;
}

}  // namespace

struct RedisCluster::Conn {
  redisContext* ctx = nullptr;
  ~Conn() {
    if (ctx) redisFree(ctx);
  }
};

struct RedisCluster::Node {
  std::string host;
  int port = 0;
  std::string name;  // host:port
  std::mutex mu;
  std::vector<Conn*> idle;
  std::atomic<int64_t> down_until_ns{0};
  ~Node() {
    for (Conn* c : idle) delete c;
  }
};

struct RedisCluster::SlotMap {
  std::array<Node*, kSlots> slot{};
  std::vector<Node*> masters;
};

std::vector<std::pair<std::string, int>> RedisCluster::ParseSeeds(const std::string& url) {
  std::vector<std::pair<std::string, int>> out;
  size_t at = 0;
  while (at <= url.size()) {
    size_t end = url.find(',', at);
    if (end == std::string::npos) end = url.size();
    std::string item = url.substr(at, end - at);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (StartsWith(item, "redis://")) item = item.substr(8);
    if (!item.empty()) {
      size_t c = item.rfind(':');
      char* e = nullptr;
      long port = c == std::string::npos ? 0 : std::strtol(item.c_str() + c + 1, &e, 10);
      if (c == std::string::npos || c == 0 || !e || *e != '\0' || port <= 0 || port > 65535)
        Fail(RS_ERR_INVALID_ARGUMENT, "redis_url: '" + item + "' is not host:port");
      out.emplace_back(item.substr(0, c), static_cast<int>(port));
    }
    at = end + 1;
  }
  if (out.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "redis_url: no host:port given");
  return out;
}

uint16_t RedisCluster::Slot(const char* key, size_t len) {
  // Only the part between the first '{' and the next '}' is hashed, if that
  // part is not empty.
  const char* open = static_cast<const char*>(std::memchr(key, '{', len));
  if (open) {
    size_t s = static_cast<size_t>(open - key) + 1;
    const char* close = static_cast<const char*>(std::memchr(key + s, '}', len - s));
    if (close && close > key + s) return Crc16(key + s, static_cast<size_t>(close - (key + s))) & (kSlots - 1);
  }
  return Crc16(key, len) & (kSlots - 1);
}

RedisCluster::RedisCluster(Options options) : opt_(std::move(options)) {
  if (opt_.seeds.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "redis: no seed nodes");
  if (opt_.pipeline_chunk == 0) opt_.pipeline_chunk = 1;
  std::string errs;
  for (const auto& s : opt_.seeds) {
    Node* n = NodeFor(s.first, s.second);
    if (LoadSlotsFrom(n)) return;
    errs += " " + n->name;
  }
  Fail(RS_ERR_IO, "redis cluster: no seed node answered CLUSTER SLOTS (tried" + errs + ")");
}

RedisCluster::~RedisCluster() = default;

RedisCluster::Node* RedisCluster::NodeFor(const std::string& host, int port) {
  std::string name = host + ":" + std::to_string(port);
  std::lock_guard<std::mutex> lock(nodes_mu_);
  auto& slot = nodes_[name];
  if (!slot) {
    slot.reset(new Node);
    slot->host = host;
    slot->port = port;
    slot->name = name;
  }
  return slot.get();
}

void RedisCluster::MarkDown(Node* n) {
  timeouts_.fetch_add(1, std::memory_order_relaxed);
  n->down_until_ns.store(NowNs() + int64_t{opt_.down_ms} * 1000000, std::memory_order_relaxed);
  std::vector<Conn*> drop;
  {
    std::lock_guard<std::mutex> lock(n->mu);
    drop.swap(n->idle);
  }
  for (Conn* c : drop) delete c;
}

RedisCluster::Conn* RedisCluster::Acquire(Node* n, std::string* err) {
  if (n->down_until_ns.load(std::memory_order_relaxed) > NowNs()) {
    *err = "redis node " + n->name + " is marked down after a failure";
    fast_failures_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(n->mu);
    if (!n->idle.empty()) {
      Conn* c = n->idle.back();
      n->idle.pop_back();
      return c;
    }
  }
  std::unique_ptr<Conn> c(new Conn);
  c->ctx = redisConnectWithTimeout(n->host.c_str(), n->port, Tv(opt_.connect_timeout_ms));
  if (!c->ctx || c->ctx->err) {
    *err = "redis node " + n->name + ": connect failed: " + (c->ctx ? c->ctx->errstr : "out of memory");
    MarkDown(n);
    return nullptr;
  }
  redisSetTimeout(c->ctx, Tv(opt_.command_timeout_ms));
  if (!opt_.password.empty()) {
    redisReply* r = static_cast<redisReply*>(redisCommand(c->ctx, "AUTH %b", opt_.password.data(), opt_.password.size()));
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    std::string msg = r && r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : c->ctx->errstr;
    if (r) freeReplyObject(r);
    if (!ok) {
      *err = "redis node " + n->name + ": AUTH failed: " + msg;
      if (!r) MarkDown(n);
      return nullptr;
    }
  }
  return c.release();
}

void RedisCluster::Release(Node* n, Conn* c, bool ok) {
  if (!ok) {
    delete c;
    return;
  }
  std::lock_guard<std::mutex> lock(n->mu);
  if (n->idle.size() < 32) {
    n->idle.push_back(c);
    return;
  }
  delete c;  // outside the pool's cap (rare): close it
}

bool RedisCluster::LoadSlotsFrom(Node* n) {
  std::string err;
  Conn* c = Acquire(n, &err);
  if (!c) return false;
  redisReply* r = static_cast<redisReply*>(redisCommand(c->ctx, "CLUSTER SLOTS"));
  if (!r) {
    Release(n, c, false);
    MarkDown(n);
    return false;
  }
  RedisReply rep;
  uint64_t bytes = 0;
  Decode(r, &rep, &bytes);
  freeReplyObject(r);
  Release(n, c, true);
  if (rep.kind != RedisReply::kArray || rep.elements.empty()) return false;
  auto m = std::make_shared<SlotMap>();
  for (const RedisReply& range : rep.elements) {
    if (range.kind != RedisReply::kArray || range.elements.size() < 3) return false;
    const RedisReply& master = range.elements[2];
    if (master.kind != RedisReply::kArray || master.elements.size() < 2) return false;
    long long lo = range.elements[0].integer, hi = range.elements[1].integer;
    if (lo < 0 || hi >= kSlots || lo > hi) return false;
    std::string host = master.elements[0].str;
    if (host.empty()) host = n->host;  // "" means the node we asked
    Node* mn = NodeFor(host, static_cast<int>(master.elements[1].integer));
    bool known = false;
    for (Node* x : m->masters) known = known || x == mn;
    if (!known) m->masters.push_back(mn);
    for (long long s = lo; s <= hi; ++s) m->slot[static_cast<size_t>(s)] = mn;
  }
  std::atomic_store(&map_, std::shared_ptr<const SlotMap>(m));
  refreshes_.fetch_add(1, std::memory_order_relaxed);
  last_refresh_ns_.store(NowNs(), std::memory_order_relaxed);
  return true;
}

void RedisCluster::Refresh() {
  std::unique_lock<std::mutex> lock(refresh_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is loading it
  if (NowNs() - last_refresh_ns_.load(std::memory_order_relaxed) < 50 * 1000000LL) return;
  std::shared_ptr<const SlotMap> cur = std::atomic_load(&map_);
  std::vector<Node*> tryn;
  if (cur) tryn = cur->masters;
  for (const auto& s : opt_.seeds) tryn.push_back(NodeFor(s.first, s.second));
  for (Node* n : tryn) {
    if (n->down_until_ns.load(std::memory_order_relaxed) > NowNs()) continue;
    if (LoadSlotsFrom(n)) return;
  }
  last_refresh_ns_.store(NowNs(), std::memory_order_relaxed);
}

void RedisCluster::Exec(const std::vector<std::vector<std::string>>& cmds,
                        std::vector<RedisReply>* replies, size_t route) {
  replies->assign(cmds.size(), RedisReply());
  std::vector<size_t> pending(cmds.size());
  for (size_t i = 0; i < cmds.size(); ++i) pending[i] = i;
  std::vector<Node*> ask(cmds.size(), nullptr);  // ASK target of a command, for its next try
  std::vector<const char*> argv;
  std::vector<size_t> argl;
  bool need_refresh = false;
  for (int attempt = 0; attempt < 6 && !pending.empty(); ++attempt) {
    if (need_refresh) {
      Refresh();
      need_refresh = false;
    }
    std::shared_ptr<const SlotMap> map = std::atomic_load(&map_);
    // Group by node, preserving order.
    std::vector<std::pair<Node*, std::vector<size_t>>> groups;
    std::map<Node*, size_t> gi;
    for (size_t i : pending) {
      const std::string& key = cmds[i].size() > route ? cmds[i][route] : cmds[i][0];
      Node* n = ask[i] ? ask[i] : map->slot[Slot(key.data(), key.size())];
      if (!n) {
        (*replies)[i] = ErrorReply("redis: no node serves the key's slot (cluster map incomplete)");
        errors_.fetch_add(1, std::memory_order_relaxed);
        need_refresh = true;
        continue;
      }
      auto it = gi.find(n);
      if (it == gi.end()) {
        it = gi.emplace(n, groups.size()).first;
        groups.emplace_back(n, std::vector<size_t>());
      }
      groups[it->second].second.push_back(i);
    }
    std::vector<size_t> next;
    // Rounds of at most pipeline_chunk commands per node: write every node's
    // chunk, then read every node's replies.
    size_t round_start = 0;
    size_t max_group = 0;
    for (auto& g : groups) max_group = std::max(max_group, g.second.size());
    for (; round_start < max_group; round_start += opt_.pipeline_chunk) {
      struct Live {
        Node* node;
        Conn* conn;
        size_t from, to;  // indices into the group's list
        std::vector<size_t>* list;
      };
      std::vector<Live> live;
      for (auto& g : groups) {
        if (round_start >= g.second.size()) continue;
        const size_t to = std::min(g.second.size(), round_start + opt_.pipeline_chunk);
        std::string err;
        Conn* c = Acquire(g.first, &err);
        if (!c) {
          for (size_t k = round_start; k < to; ++k) (*replies)[g.second[k]] = ErrorReply(err);
          errors_.fetch_add(to - round_start, std::memory_order_relaxed);
          need_refresh = true;
          continue;
        }
        uint64_t out_bytes = 0;
        for (size_t k = round_start; k < to; ++k) {
          const size_t i = g.second[k];
          if (ask[i]) redisAppendCommand(c->ctx, "ASKING");
          argv.clear();
          argl.clear();
          for (const std::string& a : cmds[i]) {
            argv.push_back(a.data());
            argl.push_back(a.size());
            out_bytes += a.size();
          }
          redisAppendCommandArgv(c->ctx, static_cast<int>(argv.size()), argv.data(), argl.data());
        }
        commands_.fetch_add(to - round_start, std::memory_order_relaxed);
        bytes_out_.fetch_add(out_bytes, std::memory_order_relaxed);
        // Flush now so every node works on its pipeline while we read the others.
        int done = 0;
        bool ok = true;
        while (!done) {
          if (redisBufferWrite(c->ctx, &done) != REDIS_OK) {
            ok = false;
            break;
          }
        }
        if (!ok) {
          std::string msg = std::string("redis node ") + g.first->name + ": write failed: " + c->ctx->errstr;
          Release(g.first, c, false);
          MarkDown(g.first);
          for (size_t k = round_start; k < to; ++k) (*replies)[g.second[k]] = ErrorReply(msg);
          errors_.fetch_add(to - round_start, std::memory_order_relaxed);
          need_refresh = true;
          continue;
        }
        live.push_back({g.first, c, round_start, to, &g.second});
      }
      for (Live& l : live) {
        round_trips_.fetch_add(1, std::memory_order_relaxed);
        bool ok = true;
        uint64_t in_bytes = 0;
        for (size_t k = l.from; k < l.to; ++k) {
          const size_t i = (*l.list)[k];
          const bool asking = ask[i] != nullptr;
          ask[i] = nullptr;
          if (ok && asking) {  // the ASKING reply
            void* rr = nullptr;
            if (redisGetReply(l.conn->ctx, &rr) != REDIS_OK || !rr) ok = false;
            if (rr) freeReplyObject(rr);
          }
          if (!ok) {
            (*replies)[i] = ErrorReply("redis node " + l.node->name + ": no reply (timeout or connection lost)");
            errors_.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          void* rr = nullptr;
          if (redisGetReply(l.conn->ctx, &rr) != REDIS_OK || !rr) {
            ok = false;
            (*replies)[i] = ErrorReply("redis node " + l.node->name + ": no reply (" +
                                       std::string(l.conn->ctx->errstr[0] ? l.conn->ctx->errstr : "timeout") + ")");
            errors_.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          RedisReply& out = (*replies)[i];
          Decode(static_cast<redisReply*>(rr), &out, &in_bytes);
          freeReplyObject(rr);
          if (out.kind != RedisReply::kError) continue;
          int slot, port;
          std::string host;
          if (StartsWith(out.str, "MOVED ") && ParseRedirect(out.str, &slot, &host, &port)) {
            moved_.fetch_add(1, std::memory_order_relaxed);
            // Point the slot at its new owner at once (copy on write), then
            // reload the whole map before the retry.
            Node* nn = NodeFor(host.empty() ? l.node->host : host, port);
            std::shared_ptr<const SlotMap> cur = std::atomic_load(&map_);
            if (cur->slot[static_cast<size_t>(slot)] != nn) {  // one copy per slot, not per key
              auto m2 = std::make_shared<SlotMap>(*cur);
              m2->slot[static_cast<size_t>(slot)] = nn;
              bool known = false;
              for (Node* x : m2->masters) known = known || x == nn;
              if (!known) m2->masters.push_back(nn);
              std::atomic_store(&map_, std::shared_ptr<const SlotMap>(m2));
            }
            need_refresh = true;
            next.push_back(i);
          } else if (StartsWith(out.str, "ASK ") && ParseRedirect(out.str, &slot, &host, &port)) {
            ask_.fetch_add(1, std::memory_order_relaxed);
            ask[i] = NodeFor(host.empty() ? l.node->host : host, port);
            next.push_back(i);
          } else if (StartsWith(out.str, "TRYAGAIN")) {
            next.push_back(i);
          } else {
            errors_.fetch_add(1, std::memory_order_relaxed);
          }
        }
        bytes_in_.fetch_add(in_bytes, std::memory_order_relaxed);
        Release(l.node, l.conn, ok);
        if (!ok) {
          MarkDown(l.node);
          need_refresh = true;
        }
      }
    }
    pending.swap(next);
    if (!pending.empty() && attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2 * attempt));
  }
  for (size_t i : pending) {
    (*replies)[i] = ErrorReply("redis: too many redirections (" + (*replies)[i].str + ")");
    errors_.fetch_add(1, std::memory_order_relaxed);
  }
}

RedisReply RedisCluster::Command(const std::vector<std::string>& argv, size_t route) {
  std::vector<RedisReply> r;
  Exec({argv}, &r, route);
  if (r[0].kind == RedisReply::kError) Fail(RS_ERR_IO, "redis " + argv[0] + ": " + r[0].str);
  return std::move(r[0]);
}

std::vector<std::string> RedisCluster::Masters() const {
  std::shared_ptr<const SlotMap> map = std::atomic_load(&map_);
  std::vector<std::string> out;
  for (Node* n : map->masters) out.push_back(n->name);
  return out;
}

RedisReply RedisCluster::CommandOn(const std::string& node, const std::vector<std::string>& argv) {
  size_t c = node.rfind(':');
  Node* n = NodeFor(node.substr(0, c), std::atoi(node.c_str() + c + 1));
  std::string err;
  Conn* conn = Acquire(n, &err);
  if (!conn) Fail(RS_ERR_IO, err);
  std::vector<const char*> av;
  std::vector<size_t> al;
  for (const std::string& a : argv) {
    av.push_back(a.data());
    al.push_back(a.size());
  }
  redisReply* r = static_cast<redisReply*>(redisCommandArgv(conn->ctx, static_cast<int>(av.size()), av.data(), al.data()));
  round_trips_.fetch_add(1, std::memory_order_relaxed);
  if (!r) {
    std::string msg = conn->ctx->errstr;
    Release(n, conn, false);
    MarkDown(n);
    Fail(RS_ERR_IO, "redis node " + node + ": " + argv[0] + " failed: " + msg);
  }
  RedisReply out;
  uint64_t bytes = 0;
  Decode(r, &out, &bytes);
  freeReplyObject(r);
  Release(n, conn, true);
  if (out.kind == RedisReply::kError) Fail(RS_ERR_IO, "redis node " + node + ": " + argv[0] + ": " + out.str);
  return out;
}

RedisClusterStats RedisCluster::Stats() const {
  RedisClusterStats s;
  s.commands = commands_.load();
  s.round_trips = round_trips_.load();
  s.errors = errors_.load();
  s.timeouts = timeouts_.load();
  s.moved = moved_.load();
  s.ask = ask_.load();
  s.refreshes = refreshes_.load();
  s.fast_failures = fast_failures_.load();
  s.bytes_out = bytes_out_.load();
  s.bytes_in = bytes_in_.load();
  std::shared_ptr<const SlotMap> map = std::atomic_load(&map_);
  s.nodes = map ? map->masters.size() : 0;
  return s;
}

}  // namespace store
}  // namespace rs
