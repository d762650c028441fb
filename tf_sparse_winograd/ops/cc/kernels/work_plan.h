// How a convolution is cut into work units: TensorFlow-free, so that the OpKernel and the
// kernel benchmark harness (bench/kernel_ab.cc) plan the work the same way.
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_WORK_PLAN_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_WORK_PLAN_H_

#include <cstdint>

#include "sparse_dense.h"
#include "sparse_winograd_conv2d.h"

namespace tfsw {

inline int64_t CeilDiv(int64_t x, int64_t k) { return (x + k - 1) / k; }

// A positive integer from the environment (tuning knobs for experiments), or `fallback`.
int64_t EnvInt(const char* name, int64_t fallback);

// Fills in the tile grid of `p` (tiles_h, tiles_w, num_tiles: from batch, out_h, out_w and
// tile_size, which must be set) and its work decomposition (tile_block .. filter_block) for a
// kernel with `vector_width` lanes run on `num_threads` threads.
void PlanWork(int vector_width, int num_threads, ConvParams* p);

// Fills in the work decomposition of a sparse fully connected layer (batch, in_features and
// units of `p` set) for a kernel with `vector_width` lanes.
void PlanDenseWork(int vector_width, DenseParams* p);

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_WORK_PLAN_H_
