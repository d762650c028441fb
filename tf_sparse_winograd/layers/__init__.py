"""Keras 3 layers: the trainable Winograd-domain convolution, the two inference layers on the
sparse ops (`SparseWinogradConv2D` for convolutions, `SparseDense` for pruned Dense layers), and a
batch norm that trains on TensorFlow's fused kernel (`FusedBatchNormalization`)."""

from tf_sparse_winograd.layers.fused_batch_norm import FusedBatchNormalization
from tf_sparse_winograd.layers.sparse_dense import SparseDense
from tf_sparse_winograd.layers.sparse_winograd_conv2d import SparseWinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradKernelInitializer
