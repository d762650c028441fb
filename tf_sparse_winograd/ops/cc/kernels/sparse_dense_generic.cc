// The sparse fully connected kernel for one instruction set (see build.py / BUILD for flags).
#define TFSW_ISA_NAME "generic"
#define TFSW_KERNEL_FACTORY GenericDenseKernel
#include "sparse_dense_impl.inc"
