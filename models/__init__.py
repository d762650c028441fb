"""Model builders for the paper's networks, installed as `tf_sparse_winograd.models`.

The sources live in the repository's top-level `models/` directory and are installed (and, with
`pip install -e`, mapped) as the subpackage `tf_sparse_winograd.models`, so that the training
library works outside the repository and nothing named `models` lands in site-packages.

`build_model(name, input_shape, num_classes, conv_type, tile_size, weight_decay, width,
kernel_gradient_scale)` is the single entry point used by train.py; every builder accepts any
input size and channel count.
"""

if __name__ != "tf_sparse_winograd.models":
    raise ImportError("The repository's models/ directory is the package `tf_sparse_winograd.models`; "
                      "import it under that name (after `pip install -e .`). "
                      f"Received: import as {__name__!r}")

from tf_sparse_winograd.models import convpool_cnn_c
from tf_sparse_winograd.models import imagenet_resnet18
from tf_sparse_winograd.models import resnet18
from tf_sparse_winograd.models import vgg_nagadomi
from tf_sparse_winograd.models.conv_block import CONV_TYPES
from tf_sparse_winograd.models.conv_block import check_conv_type

BUILDERS = {
    "vgg_nagadomi": vgg_nagadomi.build,
    "convpool_cnn_c": convpool_cnn_c.build,
    "resnet18": resnet18.build,
}
MODEL_NAMES = tuple(BUILDERS)


def build_model(name, input_shape, num_classes, conv_type="spatial", tile_size=2,
                weight_decay=0.0, width=1.0, kernel_gradient_scale="transform"):
    """Builds one of MODEL_NAMES; returns an uncompiled Keras model producing logits."""
    if name not in BUILDERS:
        raise ValueError(f"`model` must be one of {MODEL_NAMES}. Received: model={name!r}")
    return BUILDERS[name](input_shape=tuple(input_shape), num_classes=int(num_classes),
                          conv_type=check_conv_type(conv_type), tile_size=tile_size,
                          weight_decay=weight_decay, width=width,
                          kernel_gradient_scale=kernel_gradient_scale)
