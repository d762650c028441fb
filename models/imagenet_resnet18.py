"""ResNet-18 for ImageNet (He et al. 2016), built from plain Keras layers, for bringing a
standard CNN to `to_winograd` and for the ImageNet-size benchmark.

Stem: 7x7 stride-2 conv 64, batch norm, ReLU, 3x3 stride-2 max pool. Four stages of two basic
blocks (3x3 conv, BN, ReLU, 3x3 conv, BN, add, ReLU) with 64, 128, 256, 512 channels; the first
block of stages 2-4 starts with a stride-2 3x3 conv and projects its shortcut with a stride-2
1x1 conv and batch norm. Global average pooling and a dense classifier (logits).

Unlike `resnet18` (the CIFAR variant of the sparse-Winograd authors, every 3x3 conv stride 1),
this is the network as published: its strided 3x3 convolutions cannot be Winograd convolutions,
so `to_winograd` converts 13 of its 20 convolutions.
"""

import keras

STAGES = (64, 128, 256, 512)


def _conv_bn(x, filters, kernel_size, strides, name, relu=True):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def build(input_shape=(224, 224, 3), num_classes=1000, name="imagenet_resnet18"):
    """Returns an uncompiled Keras functional model producing logits."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, STAGES[0], 7, 2, "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, filters in enumerate(STAGES, start=1):
        for block in (1, 2):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            h = _conv_bn(x, filters, 3, strides, f"{prefix}_1")
            h = _conv_bn(h, filters, 3, 1, f"{prefix}_2", relu=False)
            shortcut = x
            if strides != 1:
                shortcut = _conv_bn(x, filters, 1, strides, f"{prefix}_shortcut", relu=False)
            x = keras.layers.Add(name=f"{prefix}_add")([h, shortcut])
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
