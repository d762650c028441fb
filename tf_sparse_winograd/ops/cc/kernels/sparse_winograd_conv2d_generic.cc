// The sparse Winograd kernel compiled for one instruction set (see build.py / BUILD for flags).
#define TFSW_ISA_NAME "generic"
#define TFSW_KERNEL_FACTORY GenericKernel
#include "sparse_winograd_conv2d_impl.inc"
