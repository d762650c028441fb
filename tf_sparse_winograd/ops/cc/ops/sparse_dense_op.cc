// Registration of SparseWinograd>SparseDense: inputs, attributes and the shape function.
#include <limits>
#include <string>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfsw {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

absl::Status SparseDenseShape(InferenceContext* c) {
  ShapeHandle input, row_ptr, unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &input));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &row_ptr));
  for (int i = 2; i < 5; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &unused));
  std::string layout;
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_layout", &layout));
  if (layout == "feature_rows") {
    DimensionHandle in_features;
    TF_RETURN_IF_ERROR(c->Subtract(c->Dim(row_ptr, 0), 1, &in_features));
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(input, 1), in_features, &in_features));
  }
  int64_t units;
  TF_RETURN_IF_ERROR(c->GetAttr("units", &units));
  if (units < 0 || units > std::numeric_limits<int32_t>::max()) {
    return tensorflow::errors::InvalidArgument("units must be in [0, 2^31 - 1]. Received: units=",
                                               units);
  }
  c->set_output(0, c->MakeShape({c->Dim(input, 0), units}));
  return absl::OkStatus();
}

REGISTER_OP("SparseWinograd>SparseDense")
    .Input("input: float")
    .Input("row_ptr: int32")
    .Input("col_idx: Tindex")
    .Input("values: float")
    .Input("bias: float")
    .Output("output: float")
    .Attr("units: int")
    .Attr("Tindex: {uint8, int16, int32}")
    .Attr("kernel_layout: {'feature_rows', 'unit_groups'} = 'feature_rows'")
    .Attr("activation: {'none', 'relu'} = 'none'")
    .Attr("debug_fill_nan: bool = false")
    .Attr("one_sample_gather: bool = true")
    .SetShapeFn(SparseDenseShape)
    .Doc(R"doc(
A fully connected layer with a sparse kernel: output = activation(input W + bias).

W (in_features x units) is given in one of two layouts (kernel_layout):
- 'feature_rows': CSR rows by input feature, row i of row_ptr/col_idx/values listing the nonzeros
  W[i, u] with their output units u (int16 or int32). An op node checks the kernel once and keeps
  a copy regrouped into the 'unit_groups' layout for its later calls. Duplicate (i, u) entries add
  up.
- 'unit_groups': the layout the products read, used in place (no copy): the units in groups of
  64, the features in blocks of 256, and a CSR row per (group g, block b, unit u of the group), row
  (g * ceil(in_features / 256) + b) * 64 + u, listing the nonzeros W[256 b + j, 64 g + u] with
  col_idx j (uint8), followed by 16 bytes of padding. Rows of units past the last must be empty.
Only the stored weights enter the products: a NaN or Inf input reaches the outputs whose weights
for it are stored. The batch is vectorised in the lanes.

input: [batch, in_features] float32.
row_ptr: int32, non-decreasing from 0 to nnz: [in_features + 1] ('feature_rows') or
  [ceil(units / 64) * 64 * ceil(in_features / 256) + 1] ('unit_groups').
col_idx: [nnz] output units in [0, units) ('feature_rows'), or [nnz + 16] places of the features
  in their block of 256 ('unit_groups').
values: [nnz] float32.
bias: [units] float32, or empty for no bias.
units: output features.
activation: 'none' or 'relu', applied after the bias.
debug_fill_nan: test-only: fill the output with NaN before computing.
one_sample_gather: tuning, for experiments and tests: a batch of one sample gathers its inputs
  (AVX-512), the fastest way measured; false keeps the sample in the vector lanes. Both compute
  the same result.
kernel_layout: 'feature_rows' or 'unit_groups' (above).
output: [batch, units] float32.
)doc");

}  // namespace tfsw
