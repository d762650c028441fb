"""Keras 3 layers: the trainable Winograd-domain convolution and its sparse inference twin."""

from tf_sparse_winograd.layers.sparse_winograd_conv2d import SparseWinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradConv2D
from tf_sparse_winograd.layers.winograd_conv2d import WinogradKernelInitializer
