// Model, bundle run paths: one (part of a) request through the input stage
// and a session, and the splitting of a large call into row ranges that run
// at once (see "Batch splitting" in core/model.h).
#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "base/status.h"
#include "core/model.h"
#include "core/tensors.h"

namespace rs {

void Model::RunStaged(SessionGroup& g, const rs_tensor* staged, size_t n, const int* out_idx,
                      size_t n_out, int s, TF_Tensor** outs, const TF_Buffer* run_options,
                      TF_Buffer* run_metadata) {
  const Signature& dense = *g.signature();
  TensorList in;
  try {
    stage_->Transform(staged, n, in.v);
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    Fail(RS_ERR_INTERNAL, std::string("bundle input stage failed: ") + e.what());
  }
  if (in.v.size() != dense.inputs.size())
    Fail(RS_ERR_INTERNAL, "bundle input stage produced " + std::to_string(in.v.size()) +
                              " dense inputs, the model has " + std::to_string(dense.inputs.size()));
  for (size_t i = 0; i < in.v.size(); ++i) CheckTFTensor(dense.inputs[i], in.v[i]);
  // The stage's tensors are TF-owned (nothing borrowed): outputs need no alias check.
  g.Run(s, in.v.data(), out_idx, n_out, outs, run_options, run_metadata);
}

void Model::RunSplit(SessionGroup& g, const std::vector<rs_tensor>& staged, int64_t batch, const int* out_idx,
                     size_t n_out, TF_Tensor** outs) {
  // Parts of at least min_rows rows; one per thread, or more (up to 4 per
  // thread) of ~kChunkRows rows for large calls, which the threads then take as
  // they finish, so a thread slowed down by other work on its core takes fewer.
  constexpr int64_t kChunkRows = 128;
  const int64_t min_rows = std::max<int64_t>(16, cfg_.split_min_batch / 2);
  const int64_t wanted = std::min<int64_t>(std::max<int64_t>(split_parts_, batch / kChunkRows),
                                           4 * static_cast<int64_t>(split_parts_));
  const int parts = static_cast<int>(std::min<int64_t>(wanted, batch / min_rows));
  const size_t n = staged.size();
  // Row ranges of every input: part p gets rows [batch*p/parts, batch*(p+1)/parts).
  std::vector<rs_tensor> in(static_cast<size_t>(parts) * n);
  std::vector<int64_t> shapes;
  size_t shape_len = 0;
  for (const rs_tensor& t : staged) shape_len += static_cast<size_t>(t.ndim);
  shapes.resize(static_cast<size_t>(parts) * shape_len);
  for (int p = 0; p < parts; ++p) {
    const int64_t lo = batch * p / parts, hi = batch * (p + 1) / parts;
    int64_t* sh = shapes.data() + static_cast<size_t>(p) * shape_len;
    for (size_t i = 0; i < n; ++i) {
      const rs_tensor& t = staged[i];
      rs_tensor& part = in[static_cast<size_t>(p) * n + i];
      part = t;
      std::copy(t.shape, t.shape + t.ndim, sh);
      sh[0] = hi - lo;
      part.shape = sh;
      sh += t.ndim;
      const size_t row_bytes = t.byte_size / static_cast<size_t>(batch);  // validated sizes
      part.data = static_cast<const char*>(t.data) + static_cast<size_t>(lo) * row_bytes;
      part.byte_size = static_cast<size_t>(hi - lo) * row_bytes;
    }
  }
  TensorList part_outs;
  part_outs.v.assign(static_cast<size_t>(parts) * n_out, nullptr);
  const int s0 = g.Select();
  const int sessions = static_cast<int>(g.size());
  split_pool_->Run(parts, [&](int p) {
    RunStaged(g, in.data() + static_cast<size_t>(p) * n, n, out_idx, n_out, (s0 + p) % sessions,
              part_outs.v.data() + static_cast<size_t>(p) * n_out, nullptr, nullptr);
  });
  // Join each output's parts in row order.
  for (size_t k = 0; k < n_out; ++k) {
    TF_Tensor* first = part_outs.v[k];
    const TF_DataType type = TF_TensorType(first);
    const int nd = TF_NumDims(first);
    if (type == TF_STRING || nd < 1)
      Fail(RS_ERR_INTERNAL, "a split call produced an output that cannot be joined by rows");
    std::vector<int64_t> dims(static_cast<size_t>(nd));
    int64_t rows = 0;
    size_t bytes = 0;
    for (int p = 0; p < parts; ++p) {
      TF_Tensor* t = part_outs.v[static_cast<size_t>(p) * n_out + k];
      if (TF_TensorType(t) != type || TF_NumDims(t) != nd)
        Fail(RS_ERR_INTERNAL, "the parts of a split call disagree on an output's type or rank");
      for (int d = 1; d < nd; ++d)
        if (TF_Dim(t, d) != TF_Dim(first, d))
          Fail(RS_ERR_INTERNAL, "the parts of a split call disagree on an output's shape");
      rows += TF_Dim(t, 0);
      bytes += TF_TensorByteSize(t);
    }
    if (rows != batch)
      Fail(RS_ERR_INTERNAL, "a split call's output has " + std::to_string(rows) + " rows, not " +
                                std::to_string(batch));
    for (int d = 0; d < nd; ++d) dims[static_cast<size_t>(d)] = d == 0 ? rows : TF_Dim(first, d);
    TF_Tensor* joined = TF_AllocateTensor(type, dims.data(), nd, bytes);
    if (!joined) Fail(RS_ERR_RESOURCE_EXHAUSTED, "cannot allocate a joined output");
    outs[k] = joined;
    char* dst = static_cast<char*>(TF_TensorData(joined));
    for (int p = 0; p < parts; ++p) {
      TF_Tensor* t = part_outs.v[static_cast<size_t>(p) * n_out + k];
      const size_t b = TF_TensorByteSize(t);
      if (b) std::memcpy(dst, TF_TensorData(t), b);
      dst += b;
    }
  }
  split_calls_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace rs
