"""Model builders for the paper's networks (used from the repository, not installed).

`build_model(name, input_shape, num_classes, conv_type, tile_size, weight_decay, width)` is the
single entry point used by train.py; every builder accepts any input size and channel count.
"""

from models import convpool_cnn_c
from models import resnet18
from models import vgg_nagadomi
from models.conv_block import CONV_TYPES
from models.conv_block import check_conv_type

BUILDERS = {
    "vgg_nagadomi": vgg_nagadomi.build,
    "convpool_cnn_c": convpool_cnn_c.build,
    "resnet18": resnet18.build,
}
MODEL_NAMES = tuple(BUILDERS)


def build_model(name, input_shape, num_classes, conv_type="spatial", tile_size=2,
                weight_decay=0.0, width=1.0):
    """Builds one of MODEL_NAMES; returns an uncompiled Keras model producing logits."""
    if name not in BUILDERS:
        raise ValueError(f"`model` must be one of {MODEL_NAMES}. Received: model={name!r}")
    return BUILDERS[name](input_shape=tuple(input_shape), num_classes=int(num_classes),
                          conv_type=check_conv_type(conv_type), tile_size=tile_size,
                          weight_decay=weight_decay, width=width)
