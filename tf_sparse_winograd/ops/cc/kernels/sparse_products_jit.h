// The products stage of SparseWinograd>Conv2D as machine code generated for one packed kernel
// (Xbyak), in outer-product order.
//
// The CSR loop of the kernel (sparse_winograd_conv2d_impl.inc) walks each filter's row: per
// nonzero an index load, a weight broadcast and NV loads of the transformed input, a loop exit
// per row. Generated code turns the loop around. For each Winograd coordinate p and register
// block of up to kJitMaxRegisterFilters filters, the block's accumulators (one vector of tiles
// per filter) live in registers; for each input channel c with a nonzero in the block, the
// transformed input vector V[p][c] is loaded once, then each nonzero (f, c) is one instruction,
//   vfmadd231ps acc_f, v, [weights + disp]{1to16}   (AVX-512: 7 bytes)
// with the weight read from the block's own copy of the values in the code's order, so the
// displacement fits in 8 bits. No index, no branch but one loop over the tile vectors of the
// block: the same code runs once per vector of tiles while it is hot in the L1 instruction
// cache. AVX2 has no embedded broadcast: vbroadcastss + vfmadd231ps, up to 13 filters.
//
// This file is TensorFlow-free (the kernel harness bench/kernel_ab.cc links it without TF).
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_PRODUCTS_JIT_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_PRODUCTS_JIT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparse_winograd_conv2d.h"

namespace tfsw {

// Filters per block of generated code: the kernel's filter block (and filter groups are made of
// whole blocks) when it runs generated products.
constexpr int64_t kJitFilterBlock = 64;
// Accumulator registers per register block: 30 of the 32 zmm (one holds V, one zeros), 13 of the
// 16 ymm (V, the broadcast weight, zeros).
constexpr int kJitMaxRegisterFilters512 = 30;
constexpr int kJitMaxRegisterFilters256 = 13;

// The products run as generated code only with products='jit' (the op attribute), up to
// kJitCodeCap bytes; 'auto', the default, runs the CSR loop. Measured with bench/op_speed.py
// (one layer alone) and bench/model_speed.py (VGG-nagadomi, F(4x4), batch 32), jit against csr
// (docs/performance.md):
// - AMD EPYC Zen 4 (one 512-bit FMA per cycle, L2 1 MB per core): each layer alone 1.2-1.4x
//   faster at density 0.4 and 0.1 with at most ~8 MB of code; the whole model no faster (time
//   ratio 0.99), at batch 1 1.36x slower at density 0.4. The code of one layer is ~7 bytes per
//   nonzero and every block of tiles runs all of it, so between calls of other layers it is
//   fetched again from L3 or DRAM.
// - Intel Xeon (family 6 model 167, two 512-bit FMAs per cycle, L2 2 MB per core): the layers
//   alone 1.00x / 1.03x at density 0.4 / 0.1, 1.20x slower at density 1.0 (the CSR loop's
//   complete-row micro-kernel), 1.18x slower with filters pruned in blocks of 4; the whole model
//   1.26x slower at density 0.4, 1.03x faster at 0.1.
// The CSR loop is the faster path for a network, so it is the default.
constexpr int64_t kJitCodeCap = int64_t{1} << 32;

// A packed kernel of a^2 * filters CSR rows (row r = p * filters + f), checked: row_ptr
// non-decreasing from 0 to nnz, every column in [0, channels).
struct JitKernelView {
  int64_t coordinates = 0;  // a^2
  int64_t filters = 0;
  int64_t channels = 0;
  const int32_t* row_ptr = nullptr;
  const uint16_t* col_idx16 = nullptr;  // one of the two
  const int32_t* col_idx = nullptr;
  const float* values = nullptr;
};

// What generating the code for a kernel would cost, from one pass over its indices.
struct JitSize {
  int64_t code_bytes = 0;    // upper bound of the generated code
  int64_t weight_bytes = 0;  // the reordered copy of the values
  int64_t vector_loads = 0;  // loads of V per pass over the tile vectors
};

// Bytes of generated code alive in this process (mapped, all JitProducts together).
int64_t LiveJitCodeBytes();

// Counts what the code for `kernel` on vectors of `vector_width` (16 or 8) lanes would take.
JitSize EstimateJitProducts(const JitKernelView& kernel, int vector_width);

// Generated products of one kernel: code pages (mapped writable, filled, then made read+exec,
// never both) and the values in the code's order. Immutable once built; freed with the object.
class JitProducts {
 public:
  ~JitProducts();
  JitProducts(const JitProducts&) = delete;
  JitProducts& operator=(const JitProducts&) = delete;

  // The code for `kernel` (channels and filters at most 2^24, so that every displacement fits
  // in 32 bits), or nullptr with *error saying why not (code larger than max_code_bytes, a
  // failed mapping or assembly).
  static std::unique_ptr<JitProducts> Generate(const JitKernelView& kernel, int vector_width,
                                               int64_t max_code_bytes, std::string* error);

  // What the kernel calls (see JitProductsCall in sparse_winograd_conv2d.h).
  const JitProductsCall& call() const { return call_; }
  int64_t code_bytes() const { return code_bytes_; }
  int64_t weight_bytes() const { return static_cast<int64_t>(weights_.size() * sizeof(float)); }

 private:
  JitProducts() = default;

  void* mapping_ = nullptr;
  size_t mapped_bytes_ = 0;
  int64_t code_bytes_ = 0;
  std::vector<float> weights_;
  std::vector<JitBlockFn> blocks_;
  std::vector<int64_t> weight_offsets_;
  JitProductsCall call_;
};

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_PRODUCTS_JIT_H_
