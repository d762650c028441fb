"""Input pipelines: tensorflow-datasets for CIFAR-10/100 and Fashion-MNIST, plus an offline reader.

`load_dataset(name, split, ...)` returns a batched `tf.data.Dataset` of (image, label) pairs, the
images float32, normalized per channel, with the standard augmentation on the training split
(random crop from an image zero-padded by 4 pixels (2 for 28x28 Fashion-MNIST) and a random
horizontal flip).

Fashion-MNIST also has an offline source: the IDX files of Debian's `dataset-fashion-mnist`
package (`/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz`). tfds' own builder refuses those
files (their gzip bytes differ from the upstream checksums), so `read_idx` parses the format
itself: a big-endian magic number 0x0000 <type> <ndim>, ndim big-endian int32 sizes, then the data
(uint8 for these files), gzip-compressed or not.
"""

import dataclasses
import gzip
import os
import struct

import numpy as np
import tensorflow as tf

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
SOURCES = ("auto", "tfds", "idx")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset, and how to normalize and augment it."""
    name: str
    image_shape: tuple
    num_classes: int
    mean: tuple
    std: tuple
    crop_padding: int
    flip: bool
    test_split: str = "test"


SPECS = {
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), crop_padding=4, flip=True),
    "cifar100": DatasetSpec("cifar100", (32, 32, 3), 100, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), crop_padding=4, flip=True),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10, (0.2860,), (0.3530,),
                                 crop_padding=2, flip=True),
}
DATASET_NAMES = tuple(SPECS)

# IDX element types: code -> numpy big-endian dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DataNotFoundError(RuntimeError):
    """Neither tensorflow-datasets nor the offline files could provide the data."""


def get_spec(name):
    if name not in SPECS:
        raise ValueError(f"`dataset` must be one of {DATASET_NAMES}. Received: dataset={name!r}")
    return SPECS[name]


def read_idx(path):
    """Reads an IDX file (optionally gzip-compressed) into a numpy array of its native type."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file: bad magic number {raw[:4].hex()}")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {dims} ({count * dtype.itemsize} bytes of "
                         f"data), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype, count, header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx_file(data_dir, stem):
    for candidate in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    return None


def load_idx_split(data_dir, split):
    """(images uint8 (N, 28, 28, 1), labels int64 (N,)) of the train or test split from IDX files."""
    if split not in _IDX_FILES:
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    paths = [_find_idx_file(data_dir, stem) for stem in _IDX_FILES[split]]
    if None in paths:
        missing = [s for s, p in zip(_IDX_FILES[split], paths) if p is None]
        raise FileNotFoundError(f"No IDX file {missing} (.gz or not) in {data_dir!r}")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"IDX files in {data_dir!r} have inconsistent shapes: images "
                         f"{images.shape}, labels {labels.shape}")
    return images[..., None].astype(np.uint8), labels.astype(np.int64)


def _tfds_split(name, split, tfds_data_dir, download):
    import tensorflow_datasets as tfds  # Imported lazily: it is slow to import.
    return tfds.load(name, split=split, as_supervised=True, data_dir=tfds_data_dir,
                     download=download, shuffle_files=False)


def raw_dataset(name, split, source="auto", data_dir=DEFAULT_IDX_DIR, tfds_data_dir=None,
                download=False):
    """Unbatched (uint8 image, int64 label) pairs of one split, and a note of where they came from.

    source: 'tfds', 'idx' (fashion_mnist only) or 'auto' (tfds, then for fashion_mnist the IDX
    files in `data_dir`).
    """
    get_spec(name)  # Raises for an unknown dataset name.
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}. Received: source={source!r}")
    if source == "idx" and name != "fashion_mnist":
        raise ValueError(f"The IDX reader serves fashion_mnist only. Received: dataset={name!r}")
    errors = []
    if source in ("auto", "tfds"):
        try:
            return _tfds_split(name, split, tfds_data_dir, download), "tfds"
        except Exception as e:  # tfds raises several types (AssertionError, DatasetNotFoundError..)
            errors.append(f"tensorflow-datasets: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    if source in ("auto", "idx") and name == "fashion_mnist":
        try:
            images, labels = load_idx_split(data_dir, split)
            return tf.data.Dataset.from_tensor_slices((images, labels)), f"idx:{data_dir}"
        except (OSError, ValueError) as e:
            errors.append(f"IDX files: {e}")
    if name == "fashion_mnist":
        fix = ("Install Debian's copy with `apt-get install dataset-fashion-mnist` (files in "
               f"{DEFAULT_IDX_DIR}), or pass --data_dir=<directory with the four "
               "*-idx?-ubyte[.gz] files>, or prepare it with tensorflow-datasets where a network "
               "is available (--download).")
    else:
        fix = (f"Prepare '{name}' with tensorflow-datasets where a network is available "
               "(`--download`, or `tfds build " + name + "`) and point --tfds_data_dir at it.")
    raise DataNotFoundError(f"Could not load {name} split {split!r}. " + " ".join(errors)
                            + " Fix: " + fix)


def normalize(image, spec):
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std, tf.float32)


def augment(image, spec, seed=None):
    """Random crop of the zero-padded image plus an optional random horizontal flip."""
    h, w, c = spec.image_shape
    p = spec.crop_padding
    if p:
        image = tf.pad(image, [[p, p], [p, p], [0, 0]])
        image = tf.image.random_crop(image, [h, w, c], seed=seed)
    if spec.flip:
        image = tf.image.random_flip_left_right(image, seed=seed)
    return image


def load_dataset(name, split, batch_size, training=False, max_examples=None, source="auto",
                 data_dir=DEFAULT_IDX_DIR, tfds_data_dir=None, download=False, seed=0,
                 shuffle_buffer=10000, drop_remainder=False):
    """Batched, normalized (image float32, label int32) pairs; augmented and shuffled if training.

    `max_examples` keeps only the first examples of the split (a quick run on a subset).
    Returns (dataset, info) where info is a dict with the spec, the source and the example count.
    """
    spec = get_spec(name)
    ds, origin = raw_dataset(name, split, source, data_dir, tfds_data_dir, download)
    if max_examples:
        ds = ds.take(int(max_examples))
    count = int(ds.cardinality())
    if count < 0:  # Unknown (tfds with take on some builders): count once, cheaply.
        count = int(ds.reduce(0, lambda n, _: n + 1))
    ds = ds.map(lambda x, y: (tf.ensure_shape(x, spec.image_shape), tf.cast(y, tf.int32)))
    if training:
        ds = ds.cache().shuffle(min(shuffle_buffer, max(count, 1)), seed=seed,
                                reshuffle_each_iteration=True)
        ds = ds.map(lambda x, y: (augment(normalize(x, spec), spec), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (normalize(x, spec), y), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.cache()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return ds, {"name": name, "split": split, "source": origin, "examples": count,
                "image_shape": spec.image_shape, "num_classes": spec.num_classes}
