// The scan of a packed kernel's row pointers that both ops' checks run (checked_kernel.cc),
// compiled with each kernel's instruction set so that it vectorises (the OpKernels' own
// translation units are built for baseline x86-64). No TensorFlow headers here (see
// sparse_winograd_conv2d.h).
#ifndef TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_ROW_PTR_SCAN_H_
#define TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_ROW_PTR_SCAN_H_

#include <cstdint>

namespace tfsw {

// True iff values[0 .. n) are non-decreasing. Defined in row_ptr_scan.inc, which each per-ISA
// kernel includes.
using NonDecreasingFn = bool (*)(const int32_t* values, int64_t n);

}  // namespace tfsw

#endif  // TF_SPARSE_WINOGRAD_OPS_CC_KERNELS_ROW_PTR_SCAN_H_
