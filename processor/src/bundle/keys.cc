#include "bundle/keys.h"

#include "base/status.h"

namespace rs {
namespace bundle {
namespace {

[[noreturn]] void Bad(const std::string& context, const std::string& what) {
  Fail(RS_ERR_INVALID_ARGUMENT, context + ": " + what);
}

int64_t CheckedRows(const std::string& context, const char* field, int64_t v, int64_t lo,
                    int64_t hi = INT64_MAX) {
  if (v < lo || v > hi)
    Bad(context, std::string(field) + " must be in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

}  // namespace

KeyScheme KeyScheme::FromProto(const recstrata::bundle::KeyScheme& p, const std::string& ctx) {
  KeyScheme s;
  s.hashed_ = p.has_hashed() ? p.hashed() : true;
  s.seed_ = p.seed();
  const std::string& kind = p.kind();
  if (kind == "plain" || kind == "binary_code") {
    if (!p.combiner().empty() && p.combiner() != "add")
      Bad(ctx, kind + " sub-vectors are combined by 'add', got '" + p.combiner() + "'");
    if (s.seed_ > static_cast<uint64_t>(INT64_MAX)) Bad(ctx, "seed must be < 2^63");
  }
  if (kind == "dynamic") {
    // Row key = the id itself (docs/embedding-keys.md, section 3.4).
    if (!p.combiner().empty() && p.combiner() != "add")
      Bad(ctx, "dynamic tables have one sub-table, combiner must be empty or 'add'");
    if (p.has_hashed() && p.hashed()) Bad(ctx, "dynamic tables are keyed by the raw id (hashed: false)");
    if (p.rows() || p.vocab() || p.m() || p.sizes_size() || p.bits() || p.block_bits() ||
        !p.strategy().empty() || p.seed())
      Bad(ctx, "dynamic tables take no rows, vocab, m, sizes, bits, block_bits, strategy or seed");
    s.kind_ = Kind::kDynamic;
    s.hashed_ = false;
    s.rows_ = {0};
    return s;
  }
  if (kind == "freq_aware") {
    // Hot ids' exact rows keyed by the id, the tail scheme for the rest
    // (docs/embedding-keys.md, section 3.5).
    if (!p.has_tail()) Bad(ctx, "freq_aware needs a tail key scheme");
    const std::string& tk = p.tail().kind();
    if (tk != "plain" && tk != "multihash" && tk != "binary_code")
      Bad(ctx, "freq_aware.tail must be plain, multihash or binary_code, got '" + tk + "'");
    if (p.rows() || p.vocab() || p.m() || p.sizes_size() || p.bits() || p.block_bits() ||
        !p.strategy().empty() || p.seed() || p.has_hashed() || !p.combiner().empty())
      Bad(ctx, "freq_aware takes only hot_rows and tail (the tail scheme holds the other fields)");
    const int64_t hot = CheckedRows(ctx, "freq_aware.hot_rows", p.hot_rows(), 1, int64_t{1} << 40);
    KeyScheme tail = FromProto(p.tail(), ctx + " (tail)");
    if (tail.num_subtables() + 1 > kMaxSubtables)
      Bad(ctx, "freq_aware: the tail has too many sub-tables");
    s.kind_ = Kind::kFreqAware;
    s.hashed_ = false;
    s.combiner_ = tail.combiner_;
    s.rows_ = {hot};
    s.rows_.insert(s.rows_.end(), tail.rows_.begin(), tail.rows_.end());
    s.tail_ = std::make_shared<const KeyScheme>(std::move(tail));
    return s;
  }
  if (p.hot_rows() || p.has_tail()) Bad(ctx, "hot_rows and tail are fields of kind 'freq_aware'");
  if (kind == "plain") {
    s.kind_ = Kind::kPlain;
    int64_t rows = CheckedRows(ctx, "plain.rows", p.rows(), 1);
    s.sizes_ = {static_cast<uint64_t>(rows)};
    s.rows_ = {rows};
  } else if (kind == "multihash") {
    if (p.combiner() == "add" || p.combiner().empty()) s.combiner_ = SubCombiner::kAdd;
    else if (p.combiner() == "multiply") s.combiner_ = SubCombiner::kMultiply;
    else if (p.combiner() == "concat") s.combiner_ = SubCombiner::kConcat;
    else Bad(ctx, "multihash.combiner must be add, multiply or concat, got '" + p.combiner() + "'");
    if (s.seed_ > static_cast<uint64_t>(INT64_MAX) - 64) Bad(ctx, "multihash.seed too large");
    if (p.strategy() == "qr") {
      s.kind_ = Kind::kQr;
      int64_t vocab = CheckedRows(ctx, "multihash.vocab", p.vocab(), 2);
      int64_t m = CheckedRows(ctx, "multihash.m", p.m(), 2, vocab - 1);
      if (p.sizes_size()) Bad(ctx, "multihash.sizes is for strategy 'kway'");
      s.vocab_ = static_cast<uint64_t>(vocab);
      s.m_ = static_cast<uint64_t>(m);
      s.rows_ = {m, (vocab + m - 1) / m};
    } else if (p.strategy() == "kway") {
      s.kind_ = Kind::kKway;
      if (p.sizes_size() < 2 || p.sizes_size() > 8) Bad(ctx, "multihash kway needs 2..8 sizes");
      if (!s.hashed_) Bad(ctx, "multihash kway requires hashed ids");
      if (p.vocab() || p.m()) Bad(ctx, "multihash.vocab/m are for strategy 'qr'");
      for (int i = 0; i < p.sizes_size(); ++i) {
        int64_t r = CheckedRows(ctx, "multihash.sizes[i]", p.sizes(i), 1);
        s.sizes_.push_back(static_cast<uint64_t>(r));
        s.rows_.push_back(r);
      }
    } else {
      Bad(ctx, "multihash.strategy must be 'qr' or 'kway', got '" + p.strategy() + "'");
    }
  } else if (kind == "binary_code") {
    s.kind_ = Kind::kBinaryCode;
    int bits = static_cast<int>(CheckedRows(ctx, "binary_code.bits", p.bits(), 1, 64));
    int t = static_cast<int>(CheckedRows(ctx, "binary_code.block_bits", p.block_bits(), 1, 24));
    if (t > bits) Bad(ctx, "binary_code.block_bits > bits");
    std::string strategy = p.strategy().empty() ? "succession" : p.strategy();
    if (strategy != "succession" && strategy != "skip")
      Bad(ctx, "binary_code.strategy must be 'succession' or 'skip', got '" + strategy + "'");
    s.bits_ = bits;
    s.code_mask_ = bits < 64 ? ((1ULL << bits) - 1) : ~0ULL;
    s.skip_ = strategy == "skip";
    int n = (bits + t - 1) / t;
    for (int j = 0; j < n; ++j) {
      std::vector<int> pos;
      if (!s.skip_) {
        for (int q = j * t; q < std::min((j + 1) * t, bits); ++q) pos.push_back(q);
      } else {
        for (int q = j; q < bits; q += n) pos.push_back(q);
      }
      s.rows_.push_back(int64_t{1} << pos.size());
      s.blocks_.push_back(std::move(pos));
    }
  } else {
    Bad(ctx, "unknown key scheme kind '" + kind + "' (plain, multihash, binary_code, dynamic, freq_aware)");
  }
  if (s.rows_.size() > kMaxSubtables)
    Bad(ctx, std::to_string(s.rows_.size()) + " sub-tables, at most " + std::to_string(kMaxSubtables));
  return s;
}

bool KeyScheme::RowsOk(size_t j, int64_t rows) const {
  if (kind_ == Kind::kDynamic) return rows >= 0;
  if (kind_ == Kind::kFreqAware && j == 0) return rows >= 0 && rows <= rows_[0];
  return j < rows_.size() && rows == rows_[j];
}

std::vector<int32_t> KeyScheme::SubtableDims(int32_t dim) const {
  if (kind_ == Kind::kFreqAware) {
    std::vector<int32_t> out{dim};
    const std::vector<int32_t> tail = tail_->SubtableDims(dim);
    out.insert(out.end(), tail.begin(), tail.end());
    return out;
  }
  const int32_t k = static_cast<int32_t>(rows_.size());
  if (combiner_ != SubCombiner::kConcat) return std::vector<int32_t>(k, dim);
  if (dim < k)
    Fail(RS_ERR_INVALID_ARGUMENT, "concat combiner: dim " + std::to_string(dim) +
                                      " is smaller than " + std::to_string(k) + " sub-tables");
  std::vector<int32_t> out(k);
  for (int32_t j = 0; j < k; ++j) out[j] = dim / k + (j < dim % k ? 1 : 0);
  return out;
}

void KeyScheme::RowKeys(uint64_t u, int64_t* out) const {
  switch (kind_) {
    case Kind::kDynamic:
      out[0] = static_cast<int64_t>(u);
      return;
    case Kind::kFreqAware:
      out[0] = static_cast<int64_t>(u);
      tail_->RowKeys(u, out + 1);
      return;
    case Kind::kPlain: {
      const uint64_t h = hashed_ ? Hash64(u, seed_) : u;
      out[0] = static_cast<int64_t>(h % sizes_[0]);
      return;
    }
    case Kind::kQr: {
      const uint64_t v = (hashed_ ? Hash64(u, seed_) : u) % vocab_;
      out[0] = static_cast<int64_t>(v % m_);
      out[1] = static_cast<int64_t>(v / m_);
      return;
    }
    case Kind::kKway:
      for (size_t i = 0; i < sizes_.size(); ++i)
        out[i] = static_cast<int64_t>(Hash64(u, seed_ + i) % sizes_[i]);
      return;
    case Kind::kBinaryCode: {
      const uint64_t code = (hashed_ ? Hash64(u, seed_) : u) & code_mask_;
      for (size_t j = 0; j < blocks_.size(); ++j) {
        const auto& pos = blocks_[j];
        uint64_t r;
        if (!skip_) {
          r = (code >> pos[0]) & ((1ULL << pos.size()) - 1);
        } else {
          r = 0;
          for (size_t i = 0; i < pos.size(); ++i) r |= ((code >> pos[i]) & 1ULL) << i;
        }
        out[j] = static_cast<int64_t>(r);
      }
      return;
    }
  }
}

}  // namespace bundle
}  // namespace rs
