"""Readers on small files written here in the real formats (IDX incl. .gz, CIFAR pickles, CSV, .npz, .mat)."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch

from sparta.train.readers import (
    DataError,
    DataFileNotFound,
    load_cifar10,
    load_csv,
    load_dataset,
    load_mat,
    load_mnist,
    load_npz,
    read_idx,
)


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[array.dtype]
    data = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def mnist_folder(tmp_path, gz: bool, n_train: int = 30, n_test: int = 10, rows: int = 28, dot_names: bool = False):
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, 28), dtype=np.uint8),
             "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, 28), dtype=np.uint8),
             "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8)}
    for name, arr in files.items():
        name = name.replace("-idx", ".idx") if dot_names else name
        write_idx(tmp_path / (name + (".gz" if gz else "")), arr, gz)
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    for arr in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.arange(6, dtype=">i4"),
                np.linspace(0, 1, 6).astype(">f4").reshape(3, 2)):
        p = tmp_path / f"a{arr.dtype.str}.idx"
        write_idx(p, arr, gz)
        got = read_idx(p)
        assert got.shape == arr.shape and np.array_equal(got, arr.astype(arr.dtype.newbyteorder("=")))


@pytest.mark.parametrize("gz,dots", [(False, False), (True, False), (True, True)])
def test_mnist(tmp_path, gz, dots):
    files = mnist_folder(tmp_path, gz, dot_names=dots)
    d = load_mnist(tmp_path, "fashionmnist")
    assert d.name == "fashionmnist" and d.n_features == 784 and d.n_classes == 10
    assert d.x_train.shape == (30, 784) and d.x_test.shape == (10, 784)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert torch.equal(d.y_train, torch.from_numpy(files["train-labels-idx1-ubyte"].astype(np.int64)))
    assert d.x_train.mean(0).abs().max() < 1e-4  # standardised with the training part


def test_mnist_missing_file_names_it(tmp_path):
    mnist_folder(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileNotFound, match=r"t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte\.gz in .*"):
        load_mnist(tmp_path)
    with pytest.raises(DataFileNotFound, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_idx_bad_content(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"hello world, not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)
    write_idx(p, np.zeros((2, 3, 4), np.uint8))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"declares shape \(2, 3, 4\)"):
        read_idx(p)


def test_mnist_wrong_shape(tmp_path):
    mnist_folder(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((29,), np.uint8))  # 30 images, 29 labels
    with pytest.raises(DataError, match="30 training samples but 29 labels"):
        load_mnist(tmp_path)


def cifar_folder(tmp_path, n: int = 4, width: int = 3072):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, width), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n)),
             b"batch_label": name.encode()}
        with open(base / name, "wb") as f:
            pickle.dump(d, f)
    return base


def test_cifar10(tmp_path):
    cifar_folder(tmp_path)
    d = load_cifar10(tmp_path)
    assert d.x_train.shape == (20, 3072) and d.x_test.shape == (4, 3072) and d.y_train.dtype == torch.int64
    assert load_dataset("cifar10", tmp_path / "cifar-10-batches-py").x_train.shape == (20, 3072)


def test_cifar10_errors(tmp_path):
    base = cifar_folder(tmp_path, width=100)
    with pytest.raises(DataError, match=r"shape \(n, 3072\)"):
        load_cifar10(tmp_path)
    (base / "data_batch_3").unlink()
    with pytest.raises(DataFileNotFound, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_csv(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    y = (x[:, 0] > 0).astype(float)
    p = tmp_path / "higgs.csv"
    np.savetxt(p, np.column_stack([y, x]), delimiter=",", header="label,a,b,c,d", comments="")
    d = load_csv(p, test_fraction=0.2, seed=0)
    assert d.x_train.shape == (40, 4) and d.x_test.shape == (10, 4) and d.n_classes == 2
    last = load_csv(p, test_last=5)
    assert last.x_test.shape == (5, 4)
    q = tmp_path / "last.csv.gz"
    with gzip.open(q, "wt") as f:
        np.savetxt(f, np.column_stack([x, y + 3]), delimiter=",")
    d2 = load_dataset("csv", q, label_column=-1)
    assert d2.n_features == 4 and set(d2.y_train.tolist()) <= {0, 1}
    with pytest.raises(DataError, match="label_column must be an int in"):
        load_csv(p, label_column=9)
    with pytest.raises(DataFileNotFound, match="CSV file not found"):
        load_csv(tmp_path / "missing.csv")


@pytest.mark.parametrize("text, message", [
    ("label,a,b\n0,1,2\n1,2,3\n0,x,4\n", "bad.csv, line 4: cannot read 'x' (column 2) as a number"),
    ("0,1,2\n1,2,3\n0,1,oops\n", "bad.csv, line 3: cannot read 'oops' (column 3) as a number"),
    ("label,a,b\n0,1,2\n\n1,2\n0,3,4\n", "bad.csv, line 4: 2 columns, but the lines before it have 3"),
])
def test_csv_errors_name_the_files_line(tmp_path, text, message):
    """The line an editor shows (1-based, header and blank lines counted), not numpy's 0-based data row."""
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        load_csv(p)
    assert message in str(e.value)


def test_npz(tmp_path):
    rng = np.random.default_rng(3)
    p = tmp_path / "set.npz"
    np.savez(p, x_train=rng.normal(size=(20, 2, 3)), y_train=rng.integers(0, 3, 20), x_test=rng.normal(size=(6, 2, 3)),
             y_test=rng.integers(0, 3, 6))
    d = load_npz(p)
    assert d.x_train.shape == (20, 6) and d.x_test.shape == (6, 6)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 3)), y_train=np.zeros(4), x_test=np.zeros((2, 5)),
             y_test=np.zeros(2))
    with pytest.raises(DataError, match="3 features but test samples 5"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"missing arrays \['y_train', 'x_test', 'y_test'\]"):
        load_npz(tmp_path / "missing.npz")


def test_mat(tmp_path):
    rng = np.random.default_rng(4)
    p = tmp_path / "lung.mat"
    scipy.io.savemat(p, {"X": rng.normal(size=(40, 30)), "Y": np.repeat([[1], [2], [3], [4]], 10, axis=0)})
    d = load_mat(p, test_fraction=0.25, seed=0)
    assert d.x_train.shape == (30, 30) and d.x_test.shape == (10, 30) and d.n_classes == 4
    assert sorted(np.bincount(d.y_test.numpy()).tolist()) == [2, 2, 3, 3]  # stratified
    assert torch.equal(load_mat(p, test_fraction=0.25, seed=0).x_test, d.x_test)  # the seed fixes the split
    scipy.io.savemat(tmp_path / "nox.mat", {"data": np.zeros((3, 3))})
    with pytest.raises(DataError, match="expected variables X and Y"):
        load_mat(tmp_path / "nox.mat")


def test_load_dataset_dispatch_and_errors(tmp_path):
    d = load_dataset("teacher_student", n_train=64, n_test=16, n_features=8, n_classes=3)
    assert d.x_train.shape == (64, 8)
    with pytest.raises(DataFileNotFound, match="pass --data PATH"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="unknown data option"):
        load_dataset("digits", bogus=1)
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("imagenet", tmp_path)


@pytest.mark.parametrize("options, message", [
    ({"n_train": "abc"}, "'n_train' of data set 'teacher_student' must be an int"),
    ({"n_train": True}, "must be an int"),
    ({"n_test": 2.5}, "'n_test' .* must be an int"),
    ({"n_train": 0}, "must be a positive int"),
    ({"n_features": -3}, "'n_features' .* must be a positive int"),
])
def test_load_dataset_checks_the_type_and_sign_of_generator_options(options, message):
    """``--data-option n_train=abc`` once reached the generator and failed there with a TypeError traceback."""
    with pytest.raises(DataError, match=message):
        load_dataset("teacher_student", **options)


def test_load_dataset_refuses_an_empty_side_of_the_split():
    with pytest.raises(DataError, match="0 training and 1797 test samples"):
        load_dataset("digits", test_fraction=1.0)
    with pytest.raises(DataError, match="1797 training and 0 test samples"):
        load_dataset("digits", test_fraction=0)
    assert len(load_dataset("digits", test_fraction=0.5).x_test) > 0
