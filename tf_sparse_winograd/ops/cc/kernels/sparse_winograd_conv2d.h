// The sparse Winograd convolution functor: plain-C++ interface between the OpKernel (which
// validates arguments and owns threading) and the per-ISA kernels (which do the arithmetic).
//
// This header must not include TensorFlow headers: it is included by the translation units
// compiled with -mavx512f / -mavx2, whose inline functions must never be shared with the rest
// of the library (the linker could pick an AVX-512 copy for a machine without AVX-512).
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_WINOGRAD_CONV2D_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_WINOGRAD_CONV2D_H_

#include <cstdint>

#include "row_ptr_scan.h"

namespace tfsw {

// One block of generated products (sparse_products_jit.h): the products of the filters
// [b * filter_block, (b + 1) * filter_block) of the JitProductsCall, for every coordinate p and
// every vector j < tile_vectors of a tile block. Layout (floats; VL lanes; cpad = the channels
// rounded up to VL): V[p][c] of tile vector j at vbuf + p * vstride + j * cpad * VL + c * VL;
// M[p][f] (f counted from the block's first filter, up to filter_block, zero past the last
// filter) at mbuf + p * mstride + j * filter_block * VL + f * VL. Strides given in bytes.
using JitBlockFn = void (*)(const float* vbuf, float* mbuf, const float* weights,
                            int64_t tile_vectors, int64_t vstride_bytes, int64_t mstride_bytes);
struct JitProductsCall {
  int vector_width = 0;                     // VL the code was generated for
  int64_t filter_block = 0;                 // filters per block
  const JitBlockFn* blocks = nullptr;       // ceil(filters / filter_block) entries
  const float* weights = nullptr;           // the values in the code's order
  const int64_t* weight_offsets = nullptr;  // the first weight of each block (floats)
};

// Everything a kernel needs; all sizes and indices were validated by the OpKernel.
struct ConvParams {
  // Input, NHWC float32.
  const float* input = nullptr;
  int64_t batch = 0, in_h = 0, in_w = 0, in_c = 0;
  // Convolution output size: out_h x out_w, `filters` channels.
  int64_t out_h = 0, out_w = 0, filters = 0;
  // Output, NHWC float32: the convolution's, or with max_pool its 2x2 max pool with stride 2
  // (VALID: out_h / 2 x out_w / 2, rounded down). Tiles have even sides, so no pooling window
  // straddles two tiles.
  float* output = nullptr;
  bool max_pool = false;
  // Top/left zero padding (1 for SAME, 0 for VALID). Bottom/right padding is implicit.
  int64_t pad_top = 0, pad_left = 0;
  // Tiles: tile_size x tile_size outputs each; tile t = (n * tiles_h + ty) * tiles_w + tx.
  // The grid (tiles_h, tiles_w, num_tiles) is filled in by PlanWork().
  int tile_size = 2;
  int64_t tiles_h = 0, tiles_w = 0, num_tiles = 0;
  // Packed kernel: a^2 * filters CSR rows, row r = p * filters + f, p = i * a + j the Winograd
  // coordinate; columns are input channels.
  // The column indices are given once, as 16 bits when in_channels <= 65536 (col_idx16: a
  // quarter less weight traffic in the products than 32 bits), else as 32 (col_idx); the other
  // pointer is nullptr.
  const int32_t* row_ptr = nullptr;
  const int32_t* col_idx = nullptr;
  const uint16_t* col_idx16 = nullptr;
  const float* values = nullptr;
  // row_kind[r]: kRowComplete and kRowGroupStart bits of row r (see ScanColumnsFn).
  const uint8_t* row_kind = nullptr;
  // Generated products for this kernel, or nullptr for the CSR loop over the rows above. With
  // them, the tile block's buffers use the layout of JitBlockFn and filter_block equals
  // jit->filter_block.
  const JitProductsCall* jit = nullptr;
  // Optional bias (filters floats) or nullptr.
  const float* bias = nullptr;
  bool winograd_relu = false;  // ReLU on V = B^T d B.
  bool relu = false;           // ReLU on the output (after the bias).
  // Which stages run, bit 0 input transform, bit 1 products, bit 2 output transform and store.
  // Anything but 7 leaves the output incomplete: only the benchmark harness (bench/kernel_ab.cc)
  // and the benchmark build's SparseWinograd>Conv2DStages op set it.
  int stages = 7;

  // Work decomposition, filled in by the OpKernel with PlanWork().
  int64_t tile_block = 0;         // Tiles per block: a multiple of the kernel's vector width.
  int64_t num_blocks = 0;         // ceil(num_tiles / tile_block).
  int64_t filters_per_group = 0;  // Filters per work unit: a multiple of the vector width.
  int64_t filter_groups = 0;      // Work units = num_blocks * filter_groups.
  int64_t filter_block = 0;       // Filters processed together inside a unit (cache blocking).
};

// Floats of scratch memory one work unit needs (64-byte aligned by the caller).
using ScratchSizeFn = int64_t (*)(const ConvParams&);
// Runs work units [unit_begin, unit_end): unit u covers tile block u / filter_groups and filter
// group u % filter_groups.
using ConvUnitsFn = void (*)(const ConvParams&, int64_t unit_begin, int64_t unit_end,
                             float* scratch);

// Row kinds that the products run with a faster micro-kernel than a plain sparse row.
// Complete: exactly the columns 0, 1, ..., channels - 1 in order (a dense row).
constexpr uint8_t kRowComplete = 1;
// Group start: a row of a filter f with f % 4 == 0 whose column list the rows of filters f + 1,
// f + 2 and f + 3 (same Winograd coordinate) repeat exactly, so one column index and one load of
// the transformed input serve all 4 (weights pruned in blocks of 4 filters).
constexpr uint8_t kRowGroupStart = 2;
constexpr int kGroupRows = 4;

// One pass over the columns of the a^2 * filters CSR rows (row r = p * filters + f; row_ptr
// already checked): true iff every column index is in [0, channels); sets row_kind[r] to the
// kRow* bits that hold for row r. Compiled with the kernel's instruction set, like
// NonDecreasingFn (row_ptr_scan.h), so that it vectorises: the OpKernel's own translation unit is
// built for baseline x86-64, where an unsigned 32-bit max does not vectorise (its scalar scan of
// col_idx cost about 1 ns per nonzero, as much as all the rest of a batch-1 call).
using ScanColumnsFn = bool (*)(const int32_t* row_ptr, int64_t rows, int64_t filters,
                               const int32_t* col_idx, int32_t channels, uint8_t* row_kind);

struct IsaKernel {
  const char* name;
  int vector_width;  // float lanes per vector register
  ScratchSizeFn scratch_floats;
  ConvUnitsFn run_units;
  NonDecreasingFn non_decreasing;
  ScanColumnsFn scan_columns;
};

// One per instruction set, each in its own translation unit (sparse_winograd_conv2d_<isa>.cc).
IsaKernel GenericKernel();
IsaKernel Avx2Kernel();
IsaKernel Avx512Kernel();

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_SPARSE_WINOGRAD_CONV2D_H_
