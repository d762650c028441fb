// OpKernel of SparseWinograd>SparseDense: checks every argument, checks the kernel once per op
// node (reading a 'unit_groups' kernel in place, regrouping a 'feature_rows' one into a copy),
// and runs the per-ISA kernel on the intra-op thread pool.
#include <algorithm>
#include <limits>
#include <memory>
#include <string>

#include "checked_kernel.h"
#include "op_runtime.h"
#include "sparse_dense.h"
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
    std::string layout;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_layout", &layout));
    unit_groups_ = layout == "unit_groups";
    tensorflow::DataType index_type;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tindex", &index_type));
    OP_REQUIRES(ctx, unit_groups_ == (index_type == tensorflow::DT_UINT8),
                InvalidArgument("col_idx must be uint8 in the 'unit_groups' kernel layout and ",
                                "int16 or int32 in the 'feature_rows' one. Received: ",
                                "kernel_layout='", layout, "' with col_idx of type ",
                                tensorflow::DataTypeString(index_type)));
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
    OP_REQUIRES(ctx, values.NumElements() <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("At most 2^31 - 1 nonzeros are supported. Received: ",
                                values.NumElements()));
    const DenseIsaKernel& kernel = SelectDenseKernel();
    if (unit_groups_) {  // the layout's own lengths are checked with the kernel
      OP_REQUIRES_OK(ctx, CheckBias(bias, units_, "units"));
    } else {
      OP_REQUIRES(ctx, row_ptr.NumElements() == in_features + 1,
                  InvalidArgument("row_ptr must have in_features + 1 = ", in_features + 1,
                                  " elements (a row per input feature). Received: "
                                  "row_ptr.shape=", row_ptr.shape().DebugString()));
      OP_REQUIRES_OK(ctx, CheckValuesAndBias(col_idx, values, bias, units_, "units"));
    }
    std::shared_ptr<const CheckedDenseKernel> checked;
    OP_REQUIRES_OK(ctx, checked_kernels_.Get(
                            {&row_ptr, &col_idx, &values}, {units_, in_features},
                            [&](std::shared_ptr<const CheckedDenseKernel>* result) {
                              return unit_groups_
                                         ? CheckDenseKernelInPlace(kernel, row_ptr, col_idx,
                                                                   values, in_features, units_,
                                                                   result)
                                         : CheckDenseKernel(kernel, row_ptr, col_idx, values,
                                                            units_, result);
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
    p.row_ptr = checked->row_ptr;
    p.col_idx = checked->col_idx;
    p.values = checked->values;
    p.feature_blocks = checked->feature_blocks;
    p.bias = bias.NumElements() == 0 ? nullptr : bias.flat<float>().data();
    p.relu = relu_;
    p.gather_one_sample = one_sample_gather_;

    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    PlanDenseWork(kernel.vector_width, &p);
    OP_REQUIRES_OK(ctx, RunWorkUnits("SparseWinograd>SparseDense", workers,
                                     p.num_chunks * p.unit_groups, kernel.scratch_floats(p),
                                     [&kernel, p](int64_t unit, float* scratch,
                                                  int64_t* scratch_chunk) {
                                       kernel.run_unit(p, unit, scratch, scratch_chunk);
                                     }));
  }

 private:
  int64_t units_ = 0;
  bool relu_ = false;
  bool debug_fill_nan_ = false;
  bool one_sample_gather_ = true;
  bool unit_groups_ = false;  // the kernel_layout attr
  CheckedCache<CheckedDenseKernel, 3> checked_kernels_;  // row_ptr, col_idx, values; units, in
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("SparseWinograd>SparseDense").Device(tensorflow::DEVICE_CPU),
                        SparseDenseOp);

}  // namespace tfsw
