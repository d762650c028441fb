// Registration of SparseWinograd>Conv2D: inputs, attributes and the shape function.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfsw {

using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

absl::Status SparseWinogradConv2DShape(InferenceContext* c) {
  ShapeHandle input, kernel_shape, unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &kernel_shape));
  DimensionHandle unused_dim;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(kernel_shape, 0), 3, &unused_dim));
  for (int i = 2; i < 6; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &unused));

  int64_t tile_size;
  TF_RETURN_IF_ERROR(c->GetAttr("tile_size", &tile_size));
  if (tile_size != 2 && tile_size != 4 && tile_size != 6) {
    return InvalidArgument("tile_size must be 2, 4 or 6. Received: tile_size=", tile_size);
  }
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));

  DimensionHandle out_h = c->Dim(input, 1), out_w = c->Dim(input, 2);
  if (padding == "VALID") {
    TF_RETURN_IF_ERROR(c->Subtract(out_h, 2, &out_h));
    TF_RETURN_IF_ERROR(c->Subtract(out_w, 2, &out_w));
  }
  bool max_pool;
  TF_RETURN_IF_ERROR(c->GetAttr("max_pool_2x2", &max_pool));
  if (max_pool) {
    TF_RETURN_IF_ERROR(c->Divide(out_h, 2, /*evenly_divisible=*/false, &out_h));
    TF_RETURN_IF_ERROR(c->Divide(out_w, 2, /*evenly_divisible=*/false, &out_w));
  }
  DimensionHandle filters = c->UnknownDim();
  const tensorflow::Tensor* shape_tensor = c->input_tensor(1);
  if (shape_tensor != nullptr && shape_tensor->NumElements() == 3) {
    auto v = shape_tensor->flat<int32_t>();
    if (v(0) != tile_size + 2) {
      return InvalidArgument("kernel_shape[0] (the Winograd tile side a) must be tile_size + 2 = ",
                             tile_size + 2, ". Received: kernel_shape[0]=", v(0));
    }
    if (v(1) < 0 || v(2) < 0) {
      return InvalidArgument("kernel_shape must be non-negative. Received: kernel_shape=[", v(0),
                             ", ", v(1), ", ", v(2), "]");
    }
    DimensionHandle channels;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(input, 3), c->MakeDim(v(1)), &channels));
    filters = c->MakeDim(v(2));
  }
  c->set_output(0, c->MakeShape({c->Dim(input, 0), out_h, out_w, filters}));
  return absl::OkStatus();
}

// Inputs, output and attributes of SparseWinograd>Conv2D (and of its benchmark twin).
// Attributes added after the first release need defaults, so that SavedModels written before
// them still load (TensorFlow fills in a missing attribute's default when it loads a graph).
#define TFSW_CONV2D_SIGNATURE                            \
  Input("input: float")                                  \
      .Input("kernel_shape: int32")                      \
      .Input("row_ptr: int32")                           \
      .Input("col_idx: int32")                           \
      .Input("values: float")                            \
      .Input("bias: float")                              \
      .Output("output: float")                           \
      .Attr("tile_size: int = 2")                        \
      .Attr("padding: {'SAME', 'VALID'} = 'SAME'")       \
      .Attr("winograd_relu: bool = false")               \
      .Attr("activation: {'none', 'relu'} = 'none'")     \
      .Attr("max_pool_2x2: bool = false")                \
      .Attr("debug_fill_nan: bool = false")              \
      .Attr("tile_vectors: int = 0")                     \
      .Attr("filter_block: int = 0")                     \
      .Attr("units_per_thread: int = 0")                 \
      .Attr("products: {'auto', 'csr', 'jit'} = 'auto'") \
      .SetShapeFn(SparseWinogradConv2DShape)

REGISTER_OP("SparseWinograd>Conv2D")
    .TFSW_CONV2D_SIGNATURE
    .Doc(R"doc(
3x3 stride-1 convolution computed as F(m x m, 3 x 3) Winograd with a sparse Winograd-domain
kernel U (a x a x in_channels x filters, a = tile_size + 2), stored as a^2 * filters CSR rows:
row p * filters + f (p = i * a + j) holds the nonzeros U[i, j, :, f], columns = input channels.

input: NHWC float32.
kernel_shape: [a, in_channels, filters].
row_ptr: a^2 * filters + 1 offsets into col_idx / values; starts at 0, non-decreasing, ends at nnz.
col_idx: nnz input-channel indices in [0, in_channels).
values: nnz weights.
  A node checks row_ptr and col_idx the first time it sees their tensors and keeps checked
  copies (referencing the tensors, so that their buffers stay unchanged) for later calls.
bias: [filters] or [0] (no bias).
output: NHWC; SAME: H x W, VALID: (H - 2) x (W - 2); with max_pool_2x2 half of that, rounded down.
winograd_relu: ReLU on the transformed input tiles V = B^T d B before the products.
activation: applied after the bias.
max_pool_2x2: the output is max-pooled over 2 x 2 windows with stride 2 (VALID) after the
  activation, inside the op (the tiles have even sides, so no window straddles two tiles).
debug_fill_nan: test-only; fills the output with NaN before computing, so a missed element shows.
tile_vectors, filter_block, units_per_thread: tuning, for experiments and tests; the defaults (0)
  let the op choose, which gives the fastest layout measured. tile_vectors: vectors of tiles per
  block (0, 1, 2 or 4); filter_block: filters per inner block (0: 64; at most 4096);
  units_per_thread: filter groups are added until there are this many work units per thread
  (0: 1; at most 1024). Every value computes the same convolution.
products: how the products stage runs. 'auto' (the default): the op chooses; today the CSR
  loop, which was as fast or faster on whole networks; 'csr': the CSR loop; 'jit': machine code
  generated for the kernel (AVX-512 and AVX2: in outer-product order, the nonzeros' pattern and
  order built into the code, generated when a node first sees the kernel and kept with it),
  whatever its size, ~7 bytes per nonzero. It runs a layer alone up to 1.4x faster than the CSR
  loop on some CPUs (AMD Zen 4), but its code leaves the caches between the layers of a network.
  Both paths compute the same convolution (to float32 rounding: the sums run in another order).
)doc");

#ifdef TFSW_BENCHMARK_OPS
// Benchmark builds only (python -m tf_sparse_winograd.ops.build --benchmark): the convolution
// running only some of its stages, to time them (bench/op_speed.py). Its output is incomplete
// unless stages = 7.
REGISTER_OP("SparseWinograd>Conv2DStages")
    .TFSW_CONV2D_SIGNATURE
    .Attr("stages: int = 7")
    .Doc(R"doc(
SparseWinograd>Conv2D running only the stages in `stages`: bit 0 the input transform, bit 1 the
products, bit 2 the output transform and store (0: argument checks and dispatch only). For
timing only: the output is incomplete unless stages = 7.
)doc");
#endif  // TFSW_BENCHMARK_OPS

}  // namespace tfsw
