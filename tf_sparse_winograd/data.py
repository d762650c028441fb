"""Input pipelines: tensorflow-datasets for CIFAR-10/100 and Fashion-MNIST, plus an offline reader.

`load_dataset(name, split, ...)` returns a batched `tf.data.Dataset` of (image, label) pairs, the
images float32, normalized per channel, with the standard augmentation on the training split
(random crop from an image zero-padded by 4 pixels (2 for 28x28 Fashion-MNIST) and a random
horizontal flip). The split is held in memory and a training batch is gathered, normalized and
augmented as a whole: per-image map functions cost ~5 ms of CPU per batch of 64, a tenth of a
training step on 2 cores. Split 'holdout' is a fixed part of the training split set aside for
tuning (learning-rate searches) without looking at the test split.

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


def normalize(images, spec):
    """uint8 images (any leading shape) -> float32, scaled to [0, 1] and standardized per channel."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std, tf.float32)


def augment_batch(images, spec, seed):
    """Random crop of each zero-padded image plus a random horizontal flip, a whole batch at once.

    The distribution is the usual per-image one (crop offsets uniform in [0, 2p] on each axis, flip
    with probability 1/2), drawn with stateless random ops from `seed` (shape [2]), and both are
    applied as two gathers with per-image indices, so a batch costs a few vector operations rather
    than a graph of ops per image. Padding is with zeros after normalization (the mean image).
    """
    h, w, _ = spec.image_shape
    p = spec.crop_padding
    batch = tf.shape(images)[0]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    if spec.flip:
        flip = tf.random.stateless_uniform([batch, 1], flip_seed) < 0.5
        cols = tf.where(flip, w - 1 - cols, cols)
    if p:
        images = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        offsets = tf.random.stateless_uniform([batch, 2], crop_seed, 0, 2 * p + 1, tf.int32)
        rows = rows + offsets[:, :1]
        cols = cols + offsets[:, 1:]
    images = tf.gather(images, tf.broadcast_to(rows, [batch, h]), axis=1, batch_dims=1)
    return tf.gather(images, tf.broadcast_to(cols, [batch, w]), axis=2, batch_dims=1)


def to_arrays(ds, spec):
    """Reads an unbatched (image, label) dataset into (uint8 images, int32 labels) numpy arrays."""
    images, labels = [], []
    for x, y in ds.batch(8192).as_numpy_iterator():
        images.append(np.asarray(x, np.uint8))
        labels.append(np.asarray(y, np.int32))
    if not images:
        return np.zeros((0,) + spec.image_shape, np.uint8), np.zeros((0,), np.int32)
    images, labels = np.concatenate(images), np.concatenate(labels)
    if images.shape[1:] != spec.image_shape:
        raise ValueError(f"{spec.name} images have shape {images.shape[1:]}, expected "
                         f"{spec.image_shape}")
    return images, labels


# The held-out examples are a fixed random subset of the training split: the same for every run
# and seed, so that runs tuned on it compare, and never part of the test split.
HOLDOUT_SEED = 20180430


def holdout_indices(count, holdout_examples):
    """(kept, held_out) index arrays of a training split of `count` examples, both sorted."""
    if isinstance(holdout_examples, bool) or not isinstance(holdout_examples, (int, np.integer)) \
            or not 0 <= holdout_examples < count:
        raise ValueError(f"`holdout_examples` must be an integer in [0, {count}) for a training "
                         f"split of {count} examples. Received: holdout_examples={holdout_examples!r}")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(count)
    return np.sort(order[holdout_examples:]), np.sort(order[:holdout_examples])


SPLITS = ("train", "test", "holdout")


def load_arrays(name, split, max_examples=None, holdout_examples=0, source="auto",
                data_dir=DEFAULT_IDX_DIR, tfds_data_dir=None, download=False):
    """(images uint8 (N, H, W, C), labels int32 (N,), origin) of one split, in memory.

    split: 'train', 'test', or 'holdout': `holdout_examples` examples of the training split set
    aside (a fixed random subset, see `holdout_indices`) for tuning without touching the test
    split; 'train' then excludes them. `max_examples` keeps the first N of what remains.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if split == "holdout" and not holdout_examples:
        raise ValueError("split='holdout' needs `holdout_examples` > 0. Received: "
                         f"holdout_examples={holdout_examples!r}")
    spec = get_spec(name)
    source_split = spec.test_split if split == "test" else "train"
    ds, origin = raw_dataset(name, source_split, source, data_dir, tfds_data_dir, download)
    images, labels = to_arrays(ds, spec)
    if split != "test" and holdout_examples:
        kept, held_out = holdout_indices(len(images), holdout_examples)
        chosen = held_out if split == "holdout" else kept
        images, labels = images[chosen], labels[chosen]
    if max_examples:
        images, labels = images[:int(max_examples)], labels[:int(max_examples)]
    return images, labels, origin


def training_pipeline(images, labels, spec, batch_size, seed=0, drop_remainder=False):
    """Shuffled, augmented, normalized batches of in-memory uint8 `images` and int32 `labels`.

    Every epoch (every new iterator) draws a fresh permutation of all examples and fresh
    augmentation seeds, both determined by `seed`. Work per batch: one gather of the batch's
    images, normalization and `augment_batch`, so the input pipeline costs little CPU next to the
    training step it feeds.
    """
    images = tf.constant(images)
    labels = tf.constant(labels)
    count = int(images.shape[0])
    order = (tf.data.Dataset.range(count)
             .shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True)
             .batch(batch_size, drop_remainder=drop_remainder))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def make_batch(indices, batch_seed):
        x = normalize(tf.gather(images, indices), spec)
        return augment_batch(x, spec, batch_seed), tf.gather(labels, indices)

    return (tf.data.Dataset.zip(order, seeds)
            .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def evaluation_pipeline(images, labels, spec, batch_size, drop_remainder=False):
    """Normalized batches of in-memory `images` and `labels`, in order, cached after the first pass."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size, drop_remainder)
    return ds.map(lambda x, y: (normalize(x, spec), y)).cache().prefetch(tf.data.AUTOTUNE)


def load_dataset(name, split, batch_size, training=False, max_examples=None, source="auto",
                 data_dir=DEFAULT_IDX_DIR, tfds_data_dir=None, download=False, seed=0,
                 drop_remainder=False, holdout_examples=0):
    """Batched, normalized (image float32, label int32) pairs; augmented and shuffled if training.

    The split is read into memory once (Fashion-MNIST is 55 MB, CIFAR 180 MB as uint8), so that
    batches are gathered and augmented whole (see `training_pipeline`). `max_examples` keeps only
    the first examples of the split (a quick run on a subset); `holdout_examples` and
    split='holdout': see `load_arrays`.
    Returns (dataset, info) where info is a dict with the spec, the source and the example count.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    spec = get_spec(name)
    images, labels, origin = load_arrays(name, split, max_examples, holdout_examples, source,
                                         data_dir, tfds_data_dir, download)
    if training:
        ds = training_pipeline(images, labels, spec, batch_size, seed, drop_remainder)
    else:
        ds = evaluation_pipeline(images, labels, spec, batch_size, drop_remainder)
    return ds, {"name": name, "split": split, "source": origin, "examples": int(len(images)),
                "image_shape": spec.image_shape, "num_classes": spec.num_classes}
