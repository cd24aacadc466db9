// TensorFlow ops over dynamic tables (tfops/dynamic_table.h), CPU kernels.
// Tables are named by the attr `table` ("<store id>/<table>"), opened through
// the control API (c_api.cc) before the ops run. Errors become TF errors
// (a Python exception), never an abort.
#include <string>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tfops/dynamic_table.h"

namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
namespace shape_inference = tensorflow::shape_inference;

REGISTER_OP("RecstrataDynamicLookup")
    .Input("keys: int64")
    .Output("rows: float")
    .Attr("table: string")
    .Attr("width: int")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      int64_t width;
      TF_RETURN_IF_ERROR(c->GetAttr("width", &width));
      c->set_output(0, c->Matrix(c->Dim(c->input(0), 0), width));
      return absl::OkStatus();
    });

REGISTER_OP("RecstrataDynamicApply")
    .Input("keys: int64")
    .Input("counts: int64")
    .Input("grads: float")
    .Input("replica: int32")
    .Output("step: int64")
    .Attr("table: string")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    });

REGISTER_OP("RecstrataDynamicEvict")
    .Output("evicted: int64")
    .Attr("table: string")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    });

REGISTER_OP("RecstrataDynamicSnapshot")
    .Input("out_dir: string")
    .Attr("store: string")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) { return absl::OkStatus(); });

#define RS_TRY(ctx, body)                                                   \
  try {                                                                     \
    body;                                                                   \
  } catch (const std::exception& e) {                                       \
    (ctx)->SetStatus(absl::InternalError(e.what()));                        \
    return;                                                                 \
  }

class LookupOp : public OpKernel {
 public:
  explicit LookupOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("table", &table_));
    OP_REQUIRES_OK(c, c->GetAttr("width", &width_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& keys = ctx->input(0);
    OP_REQUIRES(ctx, keys.dims() == 1, absl::InvalidArgumentError("keys must be a vector"));
    const int64_t n = keys.dim_size(0);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n, width_}), &out));
    RS_TRY(ctx, {
      auto t = rs::tfops::FindTable(table_);
      if (t->width() != width_) throw rs::tfops::DynError(table_ + ": width attr differs from the table");
      t->Lookup(keys.flat<int64_t>().data(), static_cast<size_t>(n), out->flat<float>().data());
    });
  }

 private:
  std::string table_;
  int64_t width_ = 0;
};

class ApplyOp : public OpKernel {
 public:
  explicit ApplyOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("table", &table_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& keys = ctx->input(0);
    const Tensor& counts = ctx->input(1);
    const Tensor& grads = ctx->input(2);
    const Tensor& replica = ctx->input(3);
    OP_REQUIRES(ctx, keys.dims() == 1 && counts.dims() == 1 && grads.dims() == 2 &&
                         counts.dim_size(0) == keys.dim_size(0) &&
                         grads.dim_size(0) == keys.dim_size(0),
                absl::InvalidArgumentError("keys [n], counts [n], grads [n, width] expected"));
    OP_REQUIRES(ctx, replica.dims() == 0, absl::InvalidArgumentError("replica must be a scalar"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    RS_TRY(ctx, {
      auto t = rs::tfops::FindTable(table_);
      if (grads.dim_size(1) != t->width()) throw rs::tfops::DynError(table_ + ": gradient width differs from the table");
      out->scalar<int64_t>()() = t->Contribute(replica.scalar<int32_t>()(), keys.flat<int64_t>().data(),
                                               counts.flat<int64_t>().data(), grads.flat<float>().data(),
                                               static_cast<size_t>(keys.dim_size(0)));
    });
  }

 private:
  std::string table_;
};

class EvictOp : public OpKernel {
 public:
  explicit EvictOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("table", &table_));
  }
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    RS_TRY(ctx, { out->scalar<int64_t>()() = rs::tfops::FindTable(table_)->Evict(); });
  }

 private:
  std::string table_;
};

class SnapshotOp : public OpKernel {
 public:
  explicit SnapshotOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("store", &store_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dir = ctx->input(0);
    OP_REQUIRES(ctx, dir.dims() == 0, absl::InvalidArgumentError("out_dir must be a scalar"));
    RS_TRY(ctx, { rs::tfops::FindStore(store_)->Snapshot(std::string(dir.scalar<tensorflow::tstring>()())); });
  }

 private:
  std::string store_;
};

REGISTER_KERNEL_BUILDER(Name("RecstrataDynamicLookup").Device(DEVICE_CPU), LookupOp);
REGISTER_KERNEL_BUILDER(Name("RecstrataDynamicApply").Device(DEVICE_CPU), ApplyOp);
REGISTER_KERNEL_BUILDER(Name("RecstrataDynamicEvict").Device(DEVICE_CPU), EvictOp);
REGISTER_KERNEL_BUILDER(Name("RecstrataDynamicSnapshot").Device(DEVICE_CPU), SnapshotOp);

}  // namespace
