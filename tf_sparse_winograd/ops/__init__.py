"""The custom ops (SparseWinograd>Conv2D, SparseWinograd>SparseDense): packing, the Python
wrappers and the lazy loader."""

from tf_sparse_winograd.ops.conv import reference_conv2d
from tf_sparse_winograd.ops.conv import sparse_winograd_conv2d
from tf_sparse_winograd.ops.dense import sparse_dense_matmul
from tf_sparse_winograd.ops.isa import active_isa
from tf_sparse_winograd.ops.isa import cpu_isas
from tf_sparse_winograd.ops.isa import cpu_model
from tf_sparse_winograd.ops.isa import set_isa
from tf_sparse_winograd.ops.loader import OpLibraryError
from tf_sparse_winograd.ops.loader import CONV_OP_NAME
from tf_sparse_winograd.ops.loader import DENSE_OP_NAME
from tf_sparse_winograd.ops.loader import load_op_library
from tf_sparse_winograd.ops.loader import op_library_available
from tf_sparse_winograd.ops.packing import PackedKernel
from tf_sparse_winograd.ops.packing import dense_index_dtype
from tf_sparse_winograd.ops.packing import pack_dense_kernel
from tf_sparse_winograd.ops.packing import pack_kernel
from tf_sparse_winograd.ops.packing import unpack_dense_kernel
from tf_sparse_winograd.ops.packing import unpack_kernel

__all__ = ["PackedKernel", "pack_kernel", "unpack_kernel", "sparse_winograd_conv2d",
           "reference_conv2d", "dense_index_dtype", "pack_dense_kernel", "unpack_dense_kernel",
           "sparse_dense_matmul", "load_op_library", "op_library_available", "OpLibraryError",
           "CONV_OP_NAME", "DENSE_OP_NAME", "set_isa", "active_isa", "cpu_isas",
           "cpu_model"]
