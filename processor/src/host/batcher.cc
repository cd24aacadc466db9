#include "host/batcher.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "base/status.h"
#include "core/tensors.h"
#include "tensorflow/c/c_api.h"

namespace rs::host {

struct Batcher::Call {
  std::vector<const rs_tensor*> ordered;  // per signature input
  std::vector<int> out;                   // requested outputs (empty: all)
  int64_t rows = 0;
  std::unique_ptr<rs_result> result;
  std::exception_ptr error;
  bool done = false, lead = false;
  std::chrono::steady_clock::time_point deadline;
  std::condition_variable cv;  // this call's wake-up: done, or leads now
};

std::string Batcher::Eligible(const Signature& sig) {
  if (sig.inputs.empty()) return "the signature has no inputs";
  auto check = [](const TensorSpec& t, const char* kind) -> std::string {
    if (DtypeSize(t.dtype) <= 0) return std::string(kind) + " '" + t.name + "' is not numeric";
    if (t.ndim < 1 || t.shape[0] != -1)
      return std::string(kind) + " '" + t.name + "' has no unknown first (batch) dimension";
    return "";
  };
  for (const auto& t : sig.inputs)
    if (auto why = check(t, "input"); !why.empty()) return why;
  for (const auto& t : sig.outputs)
    if (auto why = check(t, "output"); !why.empty()) return why;
  return "";
}

bool Batcher::Compatible(const Call& a, const Call& b) {
  if (a.out != b.out) return false;
  for (size_t i = 0; i < a.ordered.size(); ++i) {
    const rs_tensor& x = *a.ordered[i];
    const rs_tensor& y = *b.ordered[i];
    if (x.ndim != y.ndim || !std::equal(x.shape + 1, x.shape + x.ndim, y.shape + 1)) return false;
  }
  return true;
}

std::unique_ptr<rs_result> Batcher::Run(const rs_tensor* inputs, size_t n, const int* out_idx, size_t n_out) {
  const Signature& sig = model_.signature();
  Call c;
  OrderInputs(sig, inputs, n, c.ordered);  // a bad call fails here, alone
  c.rows = -1;
  for (const rs_tensor* t : c.ordered) {
    int64_t r = t->ndim >= 1 ? t->shape[0] : -1;
    if (c.rows == -1) c.rows = r;
    if (r != c.rows) c.rows = -2;
  }
  if (c.rows < 1 || c.rows >= opt_.max_batch_size) {  // cannot be merged: run alone
    counters_.RecordBatch(1);
    return model_.Run(inputs, n, out_idx, n_out);
  }
  c.out.assign(out_idx, out_idx + n_out);
  c.deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(opt_.max_queue_delay_us);
  std::unique_lock<std::mutex> lk(mu_);
  queue_.push_back(&c);
  counters_.queued.fetch_add(1, std::memory_order_relaxed);
  if (!leader_waiting_) {
    leader_waiting_ = true;
    Lead(lk, &c);
  } else {
    leader_cv_.notify_one();  // the collecting leader recounts
    c.cv.wait(lk, [&] { return c.done || c.lead; });
    if (!c.done) Lead(lk, &c);
  }
  if (c.error) std::rethrow_exception(c.error);
  return std::move(c.result);
}

void Batcher::Lead(std::unique_lock<std::mutex>& lk, Call* self) {
  const int64_t cap = opt_.max_batch_size;
  while (true) {
    int64_t rows = 0;
    for (Call* q : queue_)
      if (q == self || Compatible(*self, *q)) rows += q->rows;
    if (rows >= cap) break;
    if (leader_cv_.wait_until(lk, self->deadline) == std::cv_status::timeout) break;
  }
  std::vector<Call*> batch{self};
  int64_t total = self->rows;
  for (auto it = queue_.begin(); it != queue_.end();) {
    Call* q = *it;
    if (q == self) {
      it = queue_.erase(it);
    } else if (total + q->rows <= cap && Compatible(*self, *q)) {
      batch.push_back(q);
      total += q->rows;
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  counters_.queued.fetch_sub(static_cast<int64_t>(batch.size()), std::memory_order_relaxed);
  leader_waiting_ = false;
  if (!queue_.empty()) {  // the oldest call left leads the next batch
    queue_.front()->lead = true;
    leader_waiting_ = true;
    queue_.front()->cv.notify_one();
  }
  lk.unlock();
  RunBatch(batch);
  lk.lock();
  for (Call* b : batch) {
    b->done = true;
    if (b != self) b->cv.notify_one();
  }
}

namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

std::vector<rs_tensor> Views(const std::vector<const rs_tensor*>& ordered) {
  std::vector<rs_tensor> v;
  v.reserve(ordered.size());
  for (const rs_tensor* t : ordered) v.push_back(*t);
  return v;
}

}  // namespace

void Batcher::RunBatch(const std::vector<Call*>& batch) {
  counters_.RecordBatch(batch.size());
  auto alone = [this](Call* c) {
    try {
      std::vector<rs_tensor> v = Views(c->ordered);
      c->result = model_.Run(v.data(), v.size(), c->out.data(), c->out.size());
    } catch (...) {
      c->error = std::current_exception();
    }
  };
  if (batch.size() == 1) {
    alone(batch[0]);
    return;
  }
  const Signature& sig = model_.signature();
  const Call& first = *batch[0];
  int64_t total = 0;
  for (Call* c : batch) total += c->rows;
  std::unique_ptr<rs_result> merged;
  try {
    std::vector<rs_tensor> in(sig.inputs.size());
    std::vector<std::vector<int64_t>> shapes(sig.inputs.size());
    std::vector<std::unique_ptr<char, FreeDeleter>> bufs(sig.inputs.size());
    for (size_t i = 0; i < sig.inputs.size(); ++i) {
      const rs_tensor& t0 = *first.ordered[i];
      shapes[i].assign(t0.shape, t0.shape + t0.ndim);
      shapes[i][0] = total;
      size_t row_bytes = t0.byte_size / static_cast<size_t>(first.rows);
      size_t bytes = row_bytes * static_cast<size_t>(total);
      bufs[i].reset(static_cast<char*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64)));
      if (!bufs[i]) Fail(RS_ERR_RESOURCE_EXHAUSTED, "out of memory");
      size_t off = 0;
      for (Call* c : batch) {
        const rs_tensor& t = *c->ordered[i];
        if (t.byte_size) std::memcpy(bufs[i].get() + off, t.data, t.byte_size);
        off += t.byte_size;
      }
      in[i] = rs_tensor{sig.inputs[i].name.c_str(), t0.dtype, t0.ndim, shapes[i].data(), bufs[i].get(), bytes};
    }
    merged = model_.Run(in.data(), in.size(), first.out.data(), first.out.size());
    for (TF_Tensor* t : merged->tensors)
      if (TF_NumDims(t) < 1 || TF_Dim(t, 0) != total) merged.reset();  // rows not separable
  } catch (...) {
    merged.reset();  // a failing member: every call runs alone and gets its own answer
  }
  if (!merged) {
    for (Call* c : batch) alone(c);
    return;
  }
  int64_t row0 = 0;
  for (Call* c : batch) {
    try {
      auto r = std::make_unique<rs_result>();
      r->signature = merged->signature;
      r->output_index = merged->output_index;
      for (TF_Tensor* t : merged->tensors) {
        int nd = TF_NumDims(t);
        std::vector<int64_t> dims(nd);
        for (int d = 0; d < nd; ++d) dims[d] = TF_Dim(t, d);
        size_t row_bytes = TF_TensorByteSize(t) / static_cast<size_t>(total);
        dims[0] = c->rows;
        TF_Tensor* part = TF_AllocateTensor(TF_TensorType(t), dims.data(), nd, row_bytes * c->rows);
        if (part == nullptr) Fail(RS_ERR_RESOURCE_EXHAUSTED, "out of memory");
        r->tensors.push_back(part);
        if (row_bytes * c->rows != 0)
          std::memcpy(TF_TensorData(part), static_cast<const char*>(TF_TensorData(t)) + row_bytes * row0,
                      row_bytes * c->rows);
      }
      r->Finish();
      c->result = std::move(r);
    } catch (...) {
      c->error = std::current_exception();
    }
    row0 += c->rows;
  }
}

}  // namespace rs::host
