// The sparse fully connected layer y = x W (+ bias, ReLU) of SparseWinograd>SparseDense: the
// plain-C++ interface between its OpKernel and the per-ISA kernels. No TensorFlow headers here
// (see sparse_winograd_conv2d.h).
//
// The batch is in the vector lanes: the input is transposed to xt[feature][lane] (one chunk of
// up to kDenseChunkLanes samples at a time), and each output unit u is one sparse row:
// y[:, u] = sum over its nonzeros (i, w) of w * xt[i]. The features are cut into blocks of
// kDenseFeatureBlock, whose slice of xt stays in L1 while every unit's nonzeros in the block are
// applied (xt itself is 256 KiB-1 MiB, and random rows of it from L2 made the products 3x
// slower). A work unit is a chunk of samples times a group of output units; its results are
// transposed back to samples x units in the store.
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_DENSE_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_DENSE_H_

#include <cstdint>

namespace tfsw {

// Samples per chunk: 2 AVX-512 vectors. A feature block's slice of xt then takes 32 KiB.
constexpr int kDenseChunkLanes = 32;
// Features per block: a column index inside a block fits in 8 bits.
constexpr int kDenseFeatureBlock = 256;
// Bytes readable past the last column index (the one-sample path loads 16 at a time).
constexpr int kDenseIndexPadding = 16;
// Output units per group. A work unit covers one group; its nonzeros are stored together, so
// that it streams one contiguous range of the kernel (with the feature blocks of a group 1024
// units apart, the products ran 1.6x slower on a kernel that did not fit in the L2).
constexpr int kDenseUnitGroup = 64;

struct DenseParams {
  // Input [batch, in_features] and output [batch, units], float32, row-major.
  const float* input = nullptr;
  float* output = nullptr;
  int64_t batch = 0, in_features = 0, units = 0;
  // The kernel W (in_features x units) as CSR rows by unit group, feature block and unit: row
  // (g * feature_blocks + fb) * kDenseUnitGroup + u % kDenseUnitGroup, for u in group
  // g = u / kDenseUnitGroup, lists the nonzeros W[i, u] of the features i of block fb, each with
  // its feature's place in the block (i - fb * kDenseFeatureBlock). All indices were checked.
  const int32_t* row_ptr = nullptr;  // DenseKernelRows(feature_blocks, units) + 1
  const uint8_t* col_idx = nullptr;  // followed by kDenseIndexPadding readable bytes
  const float* values = nullptr;
  int64_t feature_blocks = 0;        // ceil(in_features / kDenseFeatureBlock)
  const float* bias = nullptr;  // units floats, or nullptr
  bool relu = false;
  // A chunk of one sample gathers its inputs, 16 nonzeros per FMA (AVX-512 only). Off only to
  // measure it (the op's one_sample_gather attribute).
  bool gather_one_sample = true;

  // Work decomposition (PlanDenseWork in work_plan.h): chunks of chunk_lanes samples (a
  // multiple of the vector width) times groups of kDenseUnitGroup units.
  int64_t chunk_lanes = 0, num_chunks = 0;
  int64_t unit_groups = 0;
};

// Rows of the kernel's CSR form: every group has kDenseUnitGroup rows per feature block (the
// rows past the last unit are empty).
inline int64_t DenseKernelRows(int64_t feature_blocks, int64_t units) {
  return (units + kDenseUnitGroup - 1) / kDenseUnitGroup * kDenseUnitGroup * feature_blocks;
}
inline int64_t DenseKernelRow(int64_t feature_blocks, int64_t feature_block, int64_t unit) {
  return (unit / kDenseUnitGroup * feature_blocks + feature_block) * kDenseUnitGroup +
         unit % kDenseUnitGroup;
}

// Floats of scratch one thread needs (64-byte aligned by the caller).
using DenseScratchSizeFn = int64_t (*)(const DenseParams&);
// Runs work unit `unit` (chunk unit / unit_groups, group unit % unit_groups). `*scratch_chunk`
// names the chunk whose transposed input the scratch holds (-1: none); a thread passes the
// same variable to all its calls of one op call, so that it transposes each chunk once.
using DenseUnitFn = void (*)(const DenseParams&, int64_t unit, float* scratch,
                             int64_t* scratch_chunk);

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_DENSE_H_
