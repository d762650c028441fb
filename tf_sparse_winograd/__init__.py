"""Sparse Winograd-domain convolutions for TensorFlow and Keras 3."""
