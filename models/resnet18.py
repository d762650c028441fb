"""CIFAR ResNet-18 in the style of the sparse-Winograd authors' code.

Every 3x3 convolution has stride 1 (so it can be a Winograd convolution); the stages are separated
by 2x2 max-pooling instead of strided convolutions. Stem: 3x3 conv 64. Stages of two basic blocks
with 64, 128, 256, 512 channels; a 1x1 conv + batch norm projects the shortcut where the channel
count changes. Global average pooling and a dense classifier. `width` scales every channel count.

Where the ReLU goes for 'winograd_relu': a block's input s (the sum of the previous block, before
its ReLU) feeds both the shortcut and the first conv. The shortcut receives ReLU(s) as usual, while
the first conv receives s and applies the ReLU in its Winograd domain; the second conv takes the
first conv's batch-normed output and applies that ReLU in its Winograd domain too. So every 3x3
conv but the stem reads ReLU'd Winograd tiles, as in the paper's Figure 1c.
"""

import keras

from tf_sparse_winograd.models import conv_block

STAGES = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


def build(input_shape=(32, 32, 3), num_classes=10, conv_type="spatial", tile_size=2,
          weight_decay=0.0, width=1.0, kernel_gradient_scale="transform", name="resnet18"):
    """Returns an uncompiled Keras functional model producing logits."""
    stack = conv_block.ConvStack(conv_type, tile_size, weight_decay, kernel_gradient_scale)
    moves = stack.moves_relu
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    scaled = lambda n: max(1, int(round(n * width)))
    inputs = keras.Input(shape=input_shape, name="image")
    # s: the block input before its ReLU; pending tells whether s still owes one.
    s, pending = stack.unit(inputs, scaled(STAGES[0]), True, name="stem")
    channels = scaled(STAGES[0])
    for stage, stage_channels in enumerate(STAGES, start=1):
        filters = scaled(stage_channels)
        for block in range(1, BLOCKS_PER_STAGE + 1):
            prefix = f"stage{stage}_block{block}"
            if stage > 1 and block == 1:
                s = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(s)
            activated = conv_block.settle_relu(s, pending, f"{prefix}_in_relu")
            if moves:
                h, h_pending = stack.unit(s, filters, True, pending, name=f"{prefix}_conv1")
            else:
                h, h_pending = stack.unit(activated, filters, True, name=f"{prefix}_conv1")
            h, _ = stack.unit(h, filters, False, h_pending, name=f"{prefix}_conv2", relu=False)
            shortcut = activated
            if channels != filters:
                shortcut = keras.layers.Conv2D(filters, 1, use_bias=False,
                                               kernel_initializer="he_normal",
                                               kernel_regularizer=regularizer,
                                               name=f"{prefix}_shortcut")(shortcut)
                shortcut = conv_block.batch_norm(f"{prefix}_shortcut_bn")(shortcut)
            s = keras.layers.Add(name=f"{prefix}_add")([h, shortcut])
            pending = True
            channels = filters
    x = keras.layers.ReLU(name="final_relu")(s)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
