"""VGG-nagadomi, the paper's CIFAR-10 model, for any input size and channel count.

3x3 convs 64, 64, max-pool, 128, 128, max-pool, 256 x 4, max-pool, FC 1024, FC 1024, FC classes,
with batch norm after every conv (as in common ports of nagadomi's Torch model) and dropout 0.5
before each hidden FC layer. On 32x32x3 inputs it needs 2.28e8 conv multiplies plus 5.2e6 FC
multiplies per image (the paper's 2.3e8). `width` scales every layer's channel count (1.0 is the
paper's network).
"""

import keras

from tf_sparse_winograd.models import conv_block

CONV_PLAN = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256, "pool")
FC_UNITS = (1024, 1024)


def _scaled(n, width):
    return max(1, int(round(n * width)))


def build(input_shape=(32, 32, 3), num_classes=10, conv_type="spatial", tile_size=2,
          weight_decay=0.0, width=1.0, kernel_gradient_scale="transform", dropout=0.5,
          name="vgg_nagadomi"):
    """Returns an uncompiled Keras functional model producing logits."""
    stack = conv_block.ConvStack(conv_type, tile_size, weight_decay, kernel_gradient_scale)
    inputs = keras.Input(shape=input_shape, name="image")
    x, pending = inputs, False
    plan = list(CONV_PLAN)
    conv_indices = [i for i, p in enumerate(plan) if p != "pool"]
    for i, entry in enumerate(plan):
        if entry == "pool":
            x = keras.layers.MaxPooling2D(2, name=f"pool{sum(p == 'pool' for p in plan[:i + 1])}")(x)
            continue
        next_is_conv = i != conv_indices[-1]  # Only pools lie between this conv and the next one.
        x, pending = stack.unit(x, _scaled(entry, width), next_is_conv, pending)
    x = keras.layers.Flatten(name="flatten")(x)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    for j, units in enumerate(FC_UNITS, start=1):
        x = keras.layers.Dropout(dropout, name=f"fc{j}_dropout")(x)
        x = keras.layers.Dense(_scaled(units, width), kernel_regularizer=regularizer,
                               name=f"fc{j}")(x)
        x = conv_block.batch_norm(f"fc{j}_bn")(x)
        x = keras.layers.ReLU(name=f"fc{j}_relu")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
