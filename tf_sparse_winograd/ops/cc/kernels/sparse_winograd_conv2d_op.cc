// OpKernel of SparseWinograd>Conv2D: checks every argument, plans the work, picks the kernel
// for the CPU's instruction set and runs it on the intra-op thread pool.
#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "checked_kernel.h"
#include "op_runtime.h"
#include "sparse_winograd_conv2d.h"
#include "work_plan.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

#ifndef TFSW_TF_VERSION
#define TFSW_TF_VERSION "unknown"
#endif

// The TensorFlow version this library was compiled against; the Python loader reads it from the
// file (without loading it) and refuses a library built for another version.
extern "C" __attribute__((used, visibility("default")))
const char tfsw_built_for_tensorflow[] = "tfsw-built-for-tensorflow=" TFSW_TF_VERSION;

// Bytes of generated products code alive in this process (tests read it to see code made and
// freed with its nodes).
extern "C" int64_t tfsw_generated_code_bytes() { return tfsw::LiveJitCodeBytes(); }

namespace tfsw {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;

// SparseWinograd>Conv2D; with `stage_timing` its benchmark twin SparseWinograd>Conv2DStages,
// which runs only the stages of its `stages` attr (registered in benchmark builds only).
class SparseWinogradConv2DOp : public OpKernel {
 public:
  SparseWinogradConv2DOp(OpKernelConstruction* ctx, bool stage_timing) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("tile_size", &tile_size_));
    OP_REQUIRES(ctx, tile_size_ == 2 || tile_size_ == 4 || tile_size_ == 6,
                InvalidArgument("tile_size must be 2, 4 or 6. Received: tile_size=", tile_size_));
    std::string padding;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    OP_REQUIRES(ctx, padding == "SAME" || padding == "VALID",
                InvalidArgument("padding must be SAME or VALID. Received: padding=", padding));
    same_ = padding == "SAME";
    OP_REQUIRES_OK(ctx, GetReluAttr(ctx, &relu_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("winograd_relu", &winograd_relu_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_pool_2x2", &max_pool_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("debug_fill_nan", &debug_fill_nan_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("tile_vectors", &options_.tile_vectors));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("filter_block", &options_.filter_block));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("units_per_thread", &options_.units_per_thread));
    std::string products;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("products", &products));
    OP_REQUIRES(ctx, ParseProductsPath(products, &options_.products),
                InvalidArgument("products must be auto, csr or jit. Received: products=",
                                products));
    const std::string bad_option = CheckConvOptions(options_);
    OP_REQUIRES(ctx, bad_option.empty(), InvalidArgument(bad_option));
    if (stage_timing) {
      OP_REQUIRES_OK(ctx, ctx->GetAttr("stages", &stages_));
      OP_REQUIRES(ctx, stages_ >= 0 && stages_ <= 7,
                  InvalidArgument("stages must be in [0, 7]. Received: stages=", stages_));
    }
  }

  // Sets p->jit to the generated products of the kernel if this call runs them (products='jit'
  // and an instruction set with generated code), generating them when the node first sees the
  // kernel; leaves p->jit nullptr for the CSR loop. Needs the tile grid of p, so fills it in
  // (PlanWork does it again).
  absl::Status ChooseProducts(const IsaKernel& kernel, const Tensor& row_ptr,
                              const Tensor& col_idx, const Tensor& values,
                              const CheckedKernel& checked, int64_t coordinates, ConvParams* p,
                              std::shared_ptr<const GeneratedProducts>* generated) {
    const int64_t num_tiles = p->batch * CeilDiv(p->out_h, p->tile_size) *
                              CeilDiv(p->out_w, p->tile_size);
    const bool has_code = kernel.vector_width == 16 || kernel.vector_width == 8;
    if (options_.products != ProductsPath::kJit || !has_code || num_tiles == 0) {
      return absl::OkStatus();
    }
    TF_RETURN_IF_ERROR(generated_.Get(
        {&row_ptr, &col_idx, &values},
        {p->in_c, p->filters, kernel.vector_width},
        [&](std::shared_ptr<const GeneratedProducts>* copy) {
          return GenerateProducts(row_ptr, col_idx, values, checked, coordinates, p->in_c,
                                  p->filters, kernel.vector_width, copy);
        },
        generated));
    if ((*generated)->code == nullptr) return absl::OkStatus();
    const JitProductsCall& call = (*generated)->code->call();
    if (call.vector_width != kernel.vector_width) {
      return tensorflow::errors::Internal("generated products for ", call.vector_width,
                                          " lanes met a kernel of ", kernel.vector_width);
    }
    p->jit = &call;
    return absl::OkStatus();
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& kernel_shape = ctx->input(1);
    const Tensor& row_ptr = ctx->input(2);
    const Tensor& col_idx = ctx->input(3);
    const Tensor& values = ctx->input(4);
    const Tensor& bias = ctx->input(5);

    OP_REQUIRES(ctx, input.dims() == 4,
                InvalidArgument("input must be rank 4 (NHWC). Received: input.shape=",
                                input.shape().DebugString()));
    OP_REQUIRES(ctx, kernel_shape.dims() == 1 && kernel_shape.NumElements() == 3,
                InvalidArgument("kernel_shape must be a vector of 3 int32 (a, in_channels, "
                                "filters). Received: kernel_shape.shape=",
                                kernel_shape.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckVectors({{"row_ptr", &row_ptr},
                                      {"col_idx", &col_idx},
                                      {"values", &values},
                                      {"bias", &bias}}));
    const auto ks = kernel_shape.flat<int32_t>();
    const int64_t a = ks(0), channels = ks(1), filters = ks(2);
    OP_REQUIRES(ctx, a == tile_size_ + 2,
                InvalidArgument("kernel_shape[0] (the Winograd tile side a) must be tile_size + 2 = ",
                                tile_size_ + 2, ". Received: kernel_shape[0]=", a));
    OP_REQUIRES(ctx, channels >= 0 && filters >= 0,
                InvalidArgument("kernel_shape must be non-negative. Received: kernel_shape=[", a,
                                ", ", channels, ", ", filters, "]"));
    OP_REQUIRES(ctx, channels == input.dim_size(3),
                InvalidArgument("kernel_shape[1] (in_channels) must equal the input's channels ",
                                input.dim_size(3), ". Received: kernel_shape[1]=", channels));
    const int64_t num_rows = a * a * filters;
    OP_REQUIRES(ctx, row_ptr.NumElements() == num_rows + 1,
                InvalidArgument("row_ptr must have a^2 * filters + 1 = ", num_rows + 1,
                                " elements for kernel_shape=[", a, ", ", channels, ", ", filters,
                                "]. Received: row_ptr.shape=", row_ptr.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckValuesAndBias(col_idx, values, bias, filters, "filters"));
    const IsaKernel& kernel = SelectConvKernel();
    std::shared_ptr<const CheckedKernel> checked;
    OP_REQUIRES_OK(ctx, checked_kernels_.Get(
                            {&row_ptr, &col_idx}, {channels, filters},
                            [&](std::shared_ptr<const CheckedKernel>* copy) {
                              return CheckKernel(kernel, row_ptr, col_idx, channels, filters, copy);
                            },
                            &checked));

    const int64_t batch = input.dim_size(0), in_h = input.dim_size(1), in_w = input.dim_size(2);
    const int64_t out_h = same_ ? in_h : in_h - 2, out_w = same_ ? in_w : in_w - 2;
    OP_REQUIRES(ctx, out_h >= 0 && out_w >= 0,
                InvalidArgument("With padding VALID the input must be at least 3 x 3 "
                                "(a negative output size would result). Received: input.shape=",
                                input.shape().DebugString()));
    TensorShape out_shape;
    const int64_t out_dims[4] = {batch, max_pool_ ? out_h / 2 : out_h,
                                 max_pool_ ? out_w / 2 : out_w, filters};
    OP_REQUIRES_OK(ctx, tensorflow::TensorShapeUtils::MakeShape(out_dims, 4, &out_shape));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;
    float* out = output->flat<float>().data();
    if (debug_fill_nan_) {
      std::fill(out, out + output->NumElements(), std::numeric_limits<float>::quiet_NaN());
    }

    ConvParams p;
    p.input = input.flat<float>().data();
    p.batch = batch;
    p.in_h = in_h;
    p.in_w = in_w;
    p.in_c = channels;
    p.output = out;
    p.out_h = out_h;
    p.out_w = out_w;
    p.filters = filters;
    p.pad_top = p.pad_left = same_ ? 1 : 0;
    p.tile_size = static_cast<int>(tile_size_);
    p.row_ptr = checked->row_ptr.data();
    p.col_idx = checked->col_idx.empty() ? nullptr : checked->col_idx.data();
    p.col_idx16 = checked->col_idx16.empty() ? nullptr : checked->col_idx16.data();
    p.values = values.flat<float>().data();
    p.row_kind = checked->row_kind.data();
    p.bias = bias.NumElements() == 0 ? nullptr : bias.flat<float>().data();
    p.winograd_relu = winograd_relu_;
    p.relu = relu_;
    p.max_pool = max_pool_;
    p.stages = static_cast<int>(stages_);
    std::shared_ptr<const GeneratedProducts> generated;  // held until the units are done
    OP_REQUIRES_OK(ctx, ChooseProducts(kernel, row_ptr, col_idx, values, *checked, a * a, &p,
                                       &generated));

    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    PlanWork(kernel.vector_width, workers->NumThreads(), options_, &p);
    OP_REQUIRES_OK(ctx, RunWorkUnits("SparseWinograd>Conv2D", workers,
                                     p.num_blocks * p.filter_groups, kernel.scratch_floats(p),
                                     [&kernel, p](int64_t unit, float* scratch, int64_t*) {
                                       kernel.run_units(p, unit, unit + 1, scratch);
                                     }));
  }

 private:
  int64_t tile_size_ = 2;
  bool same_ = true;
  bool relu_ = false;
  bool winograd_relu_ = false;
  bool max_pool_ = false;
  bool debug_fill_nan_ = false;
  ConvOptions options_;
  int64_t stages_ = 7;  // every stage: anything else only in SparseWinograd>Conv2DStages
  CheckedCache<CheckedKernel, 2> checked_kernels_;  // row_ptr, col_idx; channels, filters
  // row_ptr, col_idx, values; channels, filters, vector width
  CheckedCache<GeneratedProducts, 3, 3> generated_;
};

class ConvOp : public SparseWinogradConv2DOp {
 public:
  explicit ConvOp(OpKernelConstruction* ctx) : SparseWinogradConv2DOp(ctx, false) {}
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("SparseWinograd>Conv2D").Device(tensorflow::DEVICE_CPU), ConvOp);

#ifdef TFSW_BENCHMARK_OPS
namespace {
class StageTimingConvOp : public SparseWinogradConv2DOp {
 public:
  explicit StageTimingConvOp(OpKernelConstruction* ctx) : SparseWinogradConv2DOp(ctx, true) {}
};
}  // namespace

REGISTER_KERNEL_BUILDER(Name("SparseWinograd>Conv2DStages").Device(tensorflow::DEVICE_CPU),
                        StageTimingConvOp);
#endif  // TFSW_BENCHMARK_OPS

}  // namespace tfsw
