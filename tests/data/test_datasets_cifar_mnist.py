"""CIFAR-10 (image-folder archive, python batches, the safe unpickler) and MNIST (idx files)."""

import gzip
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from fairquant.data import DataSpec, get_source, load_dataset
from fairquant.data.cifar10 import CLASSES
from fairquant.errors import DataError


def need(shared_data, name):
    path = shared_data / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def test_cifar10_jpg_archive_counts(shared_data):
    root = need(shared_data, "cifar10_jpg.tar.gz")
    catalog = get_source("cifar10").scan(DataSpec(name="cifar10", root=str(root)))
    assert catalog.attribute("class")[1].names == CLASSES
    for split, n in (("train", 5_000), ("test", 1_000)):
        codes = catalog.attributes["label"].codes[catalog.split == split]
        assert np.bincount(codes).tolist() == [n] * 10


def write_batches(folder, images, labels):
    """CIFAR-10's python batches (as pickle protocol 2 with bytes keys) of 2 images each."""
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels[2 * k : 2 * k + 2]],
            b"data": images[2 * k : 2 * k + 2].reshape(2, -1),
            b"filenames": [b"a.png", b"b.png"],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_python_batches_folder_and_archive(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(12) % 10
    write_batches(tmp_path / "cifar-10-batches-py", images, labels)
    ds = load_dataset(DataSpec(name="cifar10", root=str(tmp_path / "cifar-10-batches-py")))
    assert len(ds.train) == 10 and len(ds.test) == 2 and ds.classes == CLASSES
    assert ds.train.y.tolist() == labels[:10].tolist()
    restored = ds.test.x * torch.tensor(ds.std).view(1, 3, 1, 1) + torch.tensor(ds.mean).view(
        1, 3, 1, 1
    )
    assert torch.allclose(restored * 255, torch.from_numpy(images[10:]).float(), atol=1e-3)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    again = load_dataset(DataSpec(name="cifar10", root=str(archive)))
    assert torch.equal(again.test.x, ds.test.x)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_cifar10_batches_never_execute_code(tmp_path):
    rng = np.random.default_rng(1)
    write_batches(tmp_path / "b", rng.integers(0, 256, (12, 3, 32, 32), np.uint8), np.arange(12))
    marker = tmp_path / "pwned"
    (tmp_path / "b" / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit(marker)}))
    with pytest.raises(DataError, match=r"data_batch_3 is not a CIFAR-10 python batch.*refusing"):
        load_dataset(DataSpec(name="cifar10", root=str(tmp_path / "b")))
    assert not marker.exists()
    (tmp_path / "b" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"batches \['test_batch'\] are missing"):
        load_dataset(DataSpec(name="cifar10", root=str(tmp_path / "b")))


def test_mnist_real_test_set(shared_data):
    root = need(shared_data, "mnist")
    catalog = get_source("mnist").scan(DataSpec(name="mnist", root=str(root)))
    assert len(catalog) == 10_000 and set(catalog.split) == {"test"}
    assert np.bincount(catalog.attributes["digit"].codes).sum() == 10_000
    with pytest.raises(DataError, match="has no train samples; set option split='random'"):
        load_dataset(DataSpec(name="mnist", root=str(root)))
    ds = load_dataset(
        DataSpec(name="mnist", root=str(root), options={"split": "random"}, test_size=0.25)
    )
    assert len(ds.train) == 7_500 and len(ds.test) == 2_500 and ds.image_size == (28, 28)


def write_idx(path, array, compress):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_mnist_idx_gzipped_or_not_and_imbalanced(shared_data, tmp_path):
    src = need(shared_data, "mnist")
    with gzip.open(src / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(src / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    order = np.argsort(labels, kind="stable")
    keep = np.concatenate([order[labels[order] == d][:32] for d in range(10)])
    write_idx(tmp_path / "train-images-idx3-ubyte", images[keep], compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[keep], compress=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:50], compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:50], compress=True)
    spec = DataSpec(name="mnist", root=str(tmp_path), imbalance=(16, 16, 8, 8, 4, 4, 2, 2, 1, 1))
    ds = load_dataset(spec)
    assert torch.bincount(ds.train.y).tolist() == [32, 32, 16, 16, 8, 8, 4, 4, 2, 2]
    assert len(ds.test) == 50 and ds.test.y.tolist() == labels[:50].tolist()
    grouped = load_dataset(
        DataSpec(name="mnist", root=str(tmp_path), options={"group_imbalance": [1] * 9 + [4]})
    )
    assert torch.bincount(grouped.train.g).tolist() == [8] * 9 + [32]
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03junk")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is not an idx file"):
        load_dataset(spec)
