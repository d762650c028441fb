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

// products='auto' (the op attribute) generates code for a kernel only if it takes at most
// kJitCodeBudget bytes and most of its nonzeros lie in plain sparse rows, and runs it only on
// calls of at least kJitMinTiles tiles, with AVX-512 (UseGeneratedProducts); products='jit'
// generates up to kJitCodeCap and runs it on every call.
// Measured on AMD EPYC Zen 4 (L2 1 MB per core, L3 32 MB), bench/op_speed.py and
// bench/model_speed.py, F(4x4), jit against csr (docs/performance.md):
// - the code of one layer is ~7 bytes per nonzero. Up to ~4 MB it ran as fast as the CSR loop at
//   density 1.0 or faster; 8x8x128->256 (8.3 MB) 7% slower, 8x8x256->256 (16.5 MB) 65% slower
//   than the CSR loop's dense rows; at density 0.4 the same layer (6.6 MB) 1.32x faster;
// - every block of tiles runs the whole code of the layer once, so code fetched from L3 or DRAM
//   must be shared by several vectors of tiles: the VGG-nagadomi model at batch 1 (4 to 64 tiles
//   a layer) was 1.36x slower with generated code at density 0.4 (~30 MB of code for the model)
//   and 1.06x slower at 0.1; at batch 32 (128 tiles and more) 1.08x / 1.07x faster (the op
//   alone, quiet machine: 1.22x / 1.14x).
// Measured on an Intel Xeon (family 6 model 167, two 512-bit FMAs per cycle, L2 2 MB per core):
// the generated code is fetched too slowly to feed two FMA units, and loses to the CSR loop's
// shared-column micro-kernels: 1.20x slower on the five layers at density 1.0 (complete rows),
// 1.18x / 1.08x slower at density 0.4 / 0.1 with filters pruned in blocks of 4; on plain sparse
// rows it is 1.00x / 1.03x faster at 0.4 / 0.1.
// AVX2 keeps the CSR loop under 'auto': its generated code was not measured to win.
constexpr int64_t kJitCodeBudget = int64_t{8} << 20;
constexpr int64_t kJitMinTiles = 64;
constexpr int64_t kJitCodeCap = int64_t{1} << 32;

// Whether products='auto' runs generated code (of at most kJitCodeBudget bytes) for a call on
// `num_tiles` tiles with a kernel of `vector_width` lanes and `nonzeros` nonzeros, of which
// `shared_column_nonzeros` lie in rows the CSR loop runs with a shared-column micro-kernel
// (CheckedKernel).
bool UseGeneratedProducts(int vector_width, int64_t num_tiles, int64_t nonzeros,
                          int64_t shared_column_nonzeros);

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
