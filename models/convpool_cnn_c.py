"""ConvPool-CNN-C (Springenberg et al. 2015), the full paper's CIFAR-100 model.

3x3 conv 96 x 3, max-pool, 3x3 conv 192 x 3, max-pool, 3x3 conv 192, 1x1 conv 192, 1x1 conv
classes, global average pooling. Only the 3x3 convolutions take `conv_type`; the 1x1 convs are
ordinary Conv2D layers (Winograd brings nothing to a 1x1 kernel), so the last 3x3 conv keeps its
spatial ReLU even for 'winograd_relu'. Batch norm follows every conv; dropout 0.5 after each pool.
"""

import keras

from tf_sparse_winograd.models import conv_block

CONV_PLAN = (96, 96, 96, "pool", 192, 192, 192, "pool", 192)


def build(input_shape=(32, 32, 3), num_classes=100, conv_type="spatial", tile_size=2,
          weight_decay=0.0, width=1.0, kernel_gradient_scale="transform", dropout=0.5,
          name="convpool_cnn_c"):
    """Returns an uncompiled Keras functional model producing logits."""
    stack = conv_block.ConvStack(conv_type, tile_size, weight_decay, kernel_gradient_scale)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="image")
    x, pending = inputs, False
    conv_indices = [i for i, p in enumerate(CONV_PLAN) if p != "pool"]
    pools = 0
    for i, entry in enumerate(CONV_PLAN):
        if entry == "pool":
            pools += 1
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{pools}")(x)
            x = keras.layers.Dropout(dropout, name=f"pool{pools}_dropout")(x)
            continue
        filters = max(1, int(round(entry * width)))
        x, pending = stack.unit(x, filters, i != conv_indices[-1], pending)
    for j, filters in enumerate((max(1, int(round(192 * width))), num_classes), start=1):
        x = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal",
                                kernel_regularizer=regularizer, name=f"conv1x1_{j}")(x)
        x = conv_block.batch_norm(f"conv1x1_{j}_bn")(x)
        if j == 1:
            x = keras.layers.ReLU(name=f"conv1x1_{j}_relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
