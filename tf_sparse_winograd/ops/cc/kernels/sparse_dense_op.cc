// OpKernel of SparseWinograd>SparseDense: checks every argument, checks and regroups the kernel
// once per op node, and runs the per-ISA kernel on the intra-op thread pool.
#include <algorithm>
#include <limits>
#include <memory>

#include "checked_kernel.h"
#include "op_runtime.h"
#include "sparse_dense.h"
#include "sparse_winograd_conv2d.h"
#include "work_plan.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tfsw {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;

class SparseDenseOp : public OpKernel {
 public:
  explicit SparseDenseOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("units", &units_));
    // col_idx holds at most int32 values: more units could not be addressed.
    OP_REQUIRES(ctx, units_ >= 0 && units_ <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("units must be in [0, 2^31 - 1]. Received: units=", units_));
    OP_REQUIRES_OK(ctx, GetReluAttr(ctx, &relu_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("debug_fill_nan", &debug_fill_nan_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("one_sample_gather", &one_sample_gather_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& row_ptr = ctx->input(1);
    const Tensor& col_idx = ctx->input(2);
    const Tensor& values = ctx->input(3);
    const Tensor& bias = ctx->input(4);

    OP_REQUIRES(ctx, input.dims() == 2,
                InvalidArgument("input must be rank 2 (batch, in_features). Received: "
                                "input.shape=", input.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckVectors({{"row_ptr", &row_ptr},
                                      {"col_idx", &col_idx},
                                      {"values", &values},
                                      {"bias", &bias}}));
    const int64_t batch = input.dim_size(0), in_features = input.dim_size(1);
    OP_REQUIRES(ctx, row_ptr.NumElements() == in_features + 1,
                InvalidArgument("row_ptr must have in_features + 1 = ", in_features + 1,
                                " elements (a row per input feature). Received: row_ptr.shape=",
                                row_ptr.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckValuesAndBias(col_idx, values, bias, units_, "units"));
    OP_REQUIRES(ctx, col_idx.NumElements() <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("At most 2^31 - 1 nonzeros are supported. Received: ",
                                col_idx.NumElements()));
    const IsaKernel& kernel = SelectKernel();
    std::shared_ptr<const CheckedDenseKernel> checked;
    OP_REQUIRES_OK(ctx, checked_kernels_.Get(
                            {&row_ptr, &col_idx, &values}, {units_, 0},
                            [&](std::shared_ptr<const CheckedDenseKernel>* copy) {
                              return CheckDenseKernel(kernel, row_ptr, col_idx, values, units_,
                                                      copy);
                            },
                            &checked));

    TensorShape out_shape;
    const int64_t out_dims[2] = {batch, units_};
    OP_REQUIRES_OK(ctx, tensorflow::TensorShapeUtils::MakeShape(out_dims, 2, &out_shape));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;
    float* out = output->flat<float>().data();
    if (debug_fill_nan_) {
      std::fill(out, out + output->NumElements(), std::numeric_limits<float>::quiet_NaN());
    }

    DenseParams p;
    p.input = input.flat<float>().data();
    p.output = out;
    p.batch = batch;
    p.in_features = in_features;
    p.units = units_;
    p.row_ptr = checked->row_ptr.data();
    p.col_idx = checked->col_idx.data();
    p.values = checked->values.data();
    p.feature_blocks = checked->feature_blocks;
    p.bias = bias.NumElements() == 0 ? nullptr : bias.flat<float>().data();
    p.relu = relu_;
    p.gather_one_sample = one_sample_gather_;

    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    PlanDenseWork(kernel.vector_width, &p);
    OP_REQUIRES_OK(ctx, RunWorkUnits("SparseWinograd>SparseDense", workers,
                                     p.num_chunks * p.unit_groups, kernel.dense_scratch_floats(p),
                                     [&kernel, p](int64_t unit, float* scratch,
                                                  int64_t* scratch_chunk) {
                                       kernel.run_dense_unit(p, unit, scratch, scratch_chunk);
                                     }));
  }

 private:
  int64_t units_ = 0;
  bool relu_ = false;
  bool debug_fill_nan_ = false;
  bool one_sample_gather_ = true;
  CheckedCache<CheckedDenseKernel, 3> checked_kernels_;  // row_ptr, col_idx, values; units
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("SparseWinograd>SparseDense").Device(tensorflow::DEVICE_CPU),
                        SparseDenseOp);

}  // namespace tfsw
