"""Tests for tf_sparse_winograd.data: the IDX reader, the pipelines and the error message."""

import collections
import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_sparse_winograd import data

import support


def _write_fashion_idx(directory, n_train=40, n_test=20, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        support.write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte{suffix}"), images)
        support.write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte{suffix}"), labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    arrays = _write_fashion_idx(str(tmp_path), compress=compress)
    images, labels = data.load_idx_split(str(tmp_path), "train")
    np.testing.assert_array_equal(images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1])
    assert images.shape == (40, 28, 28, 1) and images.dtype == np.uint8


def test_read_idx_parses_header_by_hand(tmp_path):
    # A hand-written file: magic 0x00000803, dims 2 x 3 x 2 (big-endian), then 12 bytes.
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3i", 2, 3, 2) + bytes(range(12))
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(data.read_idx(str(path)), np.arange(12).reshape(2, 3, 2))


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">i", 3) + b"abc")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">i", 5) + b"abc")
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(str(short))


def test_idx_pipeline_normalizes_and_batches(tmp_path):
    arrays = _write_fashion_idx(str(tmp_path))
    ds, info = data.load_dataset("fashion_mnist", "test", batch_size=8, source="idx",
                                 data_dir=str(tmp_path))
    assert info["examples"] == 20 and info["source"].startswith("idx:")
    images, labels = next(iter(ds))
    assert images.shape == (8, 28, 28, 1) and labels.dtype.name == "int32"
    spec = data.get_spec("fashion_mnist")
    expected = (arrays["t10k"][0][:8, ..., None] / 255.0 - spec.mean[0]) / spec.std[0]
    np.testing.assert_allclose(images.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), arrays["t10k"][1][:8])


def test_training_pipeline_augments_and_subsets(tmp_path):
    _write_fashion_idx(str(tmp_path))
    ds, info = data.load_dataset("fashion_mnist", "train", batch_size=16, training=True,
                                 max_examples=32, source="idx", data_dir=str(tmp_path))
    assert info["examples"] == 32
    batches = list(ds)
    assert sum(int(b[0].shape[0]) for b in batches) == 32
    assert batches[0][0].shape[1:] == (28, 28, 1)


def test_auto_falls_back_to_idx_and_error_names_the_fix(tmp_path, monkeypatch):
    _write_fashion_idx(str(tmp_path))

    def no_tfds(*args, **kwargs):
        raise AssertionError("Dataset fashion_mnist: could not find data")
    monkeypatch.setattr(data, "_tfds_split", no_tfds)
    _, info = data.load_dataset("fashion_mnist", "test", 4, data_dir=str(tmp_path))
    assert info["source"].startswith("idx:")
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion_mnist", "test", 4, data_dir=str(tmp_path / "missing"))
    with pytest.raises(data.DataNotFoundError, match="--data_dir"):
        data.load_dataset("fashion_mnist", "test", 4, data_dir=str(tmp_path / "missing"))


@pytest.mark.parametrize("name,shape", [("cifar10", (32, 32, 3)), ("cifar100", (32, 32, 3)),
                                        ("fashion_mnist", (28, 28, 1))])
def test_tfds_pipelines_with_mock_data(name, shape):
    with tfds.testing.mock_data(num_examples=24):
        ds, info = data.load_dataset(name, "train", batch_size=8, training=True, source="tfds")
        images, labels = next(iter(ds))
    assert info["source"] == "tfds" and info["examples"] == 24
    assert images.shape == (8,) + shape
    assert int(labels.numpy().max()) < data.get_spec(name).num_classes


def test_unknown_dataset_and_source():
    with pytest.raises(ValueError, match="dataset"):
        data.get_spec("mnist")
    with pytest.raises(ValueError, match="fashion_mnist only"):
        data.raw_dataset("cifar10", "train", source="idx")


def _crops_of(image, spec):
    """Every augmentation of a single (H, W, C) float image: {(dy, dx, flipped): array}."""
    p = spec.crop_padding
    h, w, _ = spec.image_shape
    padded = np.pad(image, [(p, p), (p, p), (0, 0)])
    out = {}
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop[:, ::-1]
    return out


def test_augment_batch_draws_every_crop_and_flip_per_image():
    spec = data.get_spec("fashion_mnist")
    image = np.arange(28 * 28, dtype=np.float32).reshape(28, 28, 1) + 1.0  # no two pixels equal
    batch = np.repeat(image[None], 1000, axis=0)
    out = data.augment_batch(batch, spec, tf.constant([3, 4], tf.int64)).numpy()
    crops = _crops_of(image, spec)
    seen = collections.Counter()
    for augmented in out:
        matches = [k for k, crop in crops.items() if np.array_equal(augmented, crop)]
        assert len(matches) == 1, "not a crop (with or without flip) of the padded image"
        seen[matches[0]] += 1
    assert len(seen) == 50  # 5 x 5 offsets x 2 flips, each drawn (~20 times each)
    assert min(seen.values()) >= 5
    again = data.augment_batch(batch, spec, tf.constant([3, 4], tf.int64)).numpy()
    np.testing.assert_array_equal(out, again)  # stateless: the seed decides
    other = data.augment_batch(batch, spec, tf.constant([3, 5], tf.int64)).numpy()
    assert not np.array_equal(out, other)


def test_training_pipeline_covers_each_epoch_once_and_reshuffles(tmp_path):
    arrays = _write_fashion_idx(str(tmp_path), n_train=40)
    images = arrays["train"][0]
    ds, _ = data.load_dataset("fashion_mnist", "train", batch_size=16, training=True,
                              source="idx", data_dir=str(tmp_path), seed=7)
    spec = data.get_spec("fashion_mnist")
    epochs = []
    for _ in range(2):
        labels = np.concatenate([y.numpy() for _, y in ds])
        epochs.append(labels)
        np.testing.assert_array_equal(np.sort(labels), np.sort(arrays["train"][1]))
    assert not np.array_equal(epochs[0], epochs[1])  # a new permutation every epoch
    # Every image is a normalized crop/flip of one training image.
    x, _ = next(iter(ds))
    normalized = (images[..., None] / 255.0 - spec.mean[0]) / spec.std[0]
    for augmented in x.numpy()[:4]:
        assert any(np.allclose(augmented, crop, atol=1e-5)
                   for image in normalized for crop in _crops_of(image, spec).values())


def test_holdout_split_is_fixed_and_disjoint_from_training(tmp_path):
    arrays = _write_fashion_idx(str(tmp_path), n_train=40)
    common = dict(source="idx", data_dir=str(tmp_path), holdout_examples=10)
    train_x, train_y, _ = data.load_arrays("fashion_mnist", "train", **common)
    held_x, held_y, _ = data.load_arrays("fashion_mnist", "holdout", **common)
    assert len(train_x) == 30 and len(held_x) == 10
    all_images = arrays["train"][0].reshape(40, -1)
    index = lambda x: sorted(int(np.flatnonzero((all_images == i.ravel()).all(1))[0]) for i in x)
    assert set(index(train_x)).isdisjoint(index(held_x))
    assert sorted(index(train_x) + index(held_x)) == list(range(40))
    again, _, _ = data.load_arrays("fashion_mnist", "holdout", **common)
    np.testing.assert_array_equal(again, held_x)
    test_x, _, _ = data.load_arrays("fashion_mnist", "test", **common)
    assert len(test_x) == 20  # the test split is untouched
    ds, info = data.load_dataset("fashion_mnist", "holdout", 4, **common)
    assert info["examples"] == 10 and info["split"] == "holdout"


def test_bad_holdout_and_batch_size_name_the_argument(tmp_path):
    _write_fashion_idx(str(tmp_path), n_train=40)
    common = dict(source="idx", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="holdout_examples"):
        data.load_arrays("fashion_mnist", "train", holdout_examples=40, **common)
    with pytest.raises(ValueError, match="holdout_examples"):
        data.load_arrays("fashion_mnist", "holdout", **common)
    with pytest.raises(ValueError, match="split"):
        data.load_arrays("fashion_mnist", "validation", **common)
    with pytest.raises(ValueError, match="batch_size"):
        data.load_dataset("fashion_mnist", "test", 0, **common)
