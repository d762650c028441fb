// The sparse fully connected kernel for one instruction set (see build.py / BUILD for flags).
#ifndef __AVX512F__
#error "compile this file with -mavx512f -mfma"
#endif
#define TFSW_ISA_NAME "avx512"
#define TFSW_KERNEL_FACTORY Avx512DenseKernel
#include "sparse_dense_impl.inc"
