// How a convolution is cut into work units: TensorFlow-free, so that the OpKernel and the
// kernel benchmark harness (bench/kernel_ab.cc) plan the work the same way.
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_WORK_PLAN_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_WORK_PLAN_H_

#include <cstdint>
#include <string>

#include "sparse_dense.h"
#include "sparse_winograd_conv2d.h"

namespace tfsw {

inline int64_t CeilDiv(int64_t x, int64_t k) { return (x + k - 1) / k; }

// The tuning options of SparseWinograd>Conv2D, one per op attribute of the same name, read once
// when the OpKernel is constructed (and checked there: see CheckConvOptions). 0 leaves the
// choice to PlanWork, which picks the fastest layout measured; other values exist for
// experiments and tests. A new kernel choice (e.g. another products path) is added the same way:
// an attribute with a default meaning "the op decides", a field here, a check below.
// How the products stage runs (attribute `products`): 'auto' (the op decides: today the CSR
// loop, the faster path for a network; see sparse_products_jit.h), 'csr' (the CSR loop), 'jit'
// (generated code whenever the instruction set has it, whatever its size).
enum class ProductsPath { kAuto, kCsr, kJit };

struct ConvOptions {
  int64_t tile_vectors = 0;      // vectors of tiles per block: 0 (chosen by size), 1, 2 or 4
  int64_t filter_block = 0;      // filters per inner block of the CSR loop, rounded up to the
                                 // vector width; 0: 64 (generated code has its own blocks)
  int64_t units_per_thread = 0;  // filter groups are added until there are this many work units
                                 // per thread; 0: 1
  ProductsPath products = ProductsPath::kAuto;
};

// The ProductsPath named `name` ('auto', 'csr' or 'jit'); false for another name.
bool ParseProductsPath(const std::string& name, ProductsPath* path);

// Largest filter_block and units_per_thread accepted (larger ones would only waste scratch).
constexpr int64_t kMaxFilterBlock = 4096;
constexpr int64_t kMaxUnitsPerThread = 1024;

// Empty if `options` is valid, else what is wrong with it, naming the attribute and its value.
std::string CheckConvOptions(const ConvOptions& options);

// Fills in the tile grid of `p` (tiles_h, tiles_w, num_tiles: from batch, out_h, out_w and
// tile_size, which must be set) and its work decomposition (tile_block .. filter_block) for a
// kernel with `vector_width` lanes run on `num_threads` threads, following `options` (valid).
void PlanWork(int vector_width, int num_threads, const ConvOptions& options, ConvParams* p);

// Fills in the work decomposition of a sparse fully connected layer (batch, in_features and
// units of `p` set) for a kernel with `vector_width` lanes.
void PlanDenseWork(int vector_width, DenseParams* p);

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_WORK_PLAN_H_
