// The sparse fully connected kernel for one instruction set (see build.py / BUILD for flags).
#if !defined(__AVX2__) || !defined(__FMA__)
#error "compile this file with -mavx2 -mfma"
#endif
#define TFSW_ISA_NAME "avx2"
#define TFSW_KERNEL_FACTORY Avx2DenseKernel
#include "sparse_dense_impl.inc"
