"""Labels checked against the declared or inferred class set, and the CSV reader's edge cases (header rule,
header-only files, non-finite values, binary files): one DataError naming the file, line (or index) and value."""

from __future__ import annotations

import gzip
import pickle
import warnings

import numpy as np
import pytest
import scipy.io

from sparta.cli import main
from sparta.train.readers import DataError, class_labels, load_cifar10, load_csv, load_mat, load_mnist, load_npz
from tests.train.test_readers import cifar_folder, mnist_folder, write_idx


def csv_with_labels(path, labels, header: str | None = "label,a,b") -> None:
    rng = np.random.default_rng(0)
    lines = ([header] if header else []) + [f"{y},{rng.normal():.3f},{rng.normal():.3f}" for y in labels]
    path.write_text("\n".join(lines) + "\n")


BASE = [0, 1, 2] * 10  # 30 rows: lines 2..31 after the header


@pytest.mark.parametrize("bad, message", [
    ("-1", "line 32: label -1 is negative, but the labels count classes from 0 (expected integers in 0..2)"),
    ("nan", "line 32: label nan is not a number; labels must be integer classes"),
    ("inf", "line 32: label inf is not finite"),
    ("1.5", "line 32: label 1.5 is not an integer"),
    ("10", "line 32: label 10 skips classes 3..9, which no sample has"),
])
def test_a_csv_label_that_is_not_a_class_is_named_with_its_line(tmp_path, bad, message):
    p = tmp_path / "data.csv"
    csv_with_labels(p, [*BASE, bad])
    with pytest.raises(DataError) as e:
        load_csv(p)
    assert str(e.value) == f"{p}, {message}" or str(e.value).startswith(f"{p}, {message}")


def test_csv_label_lines_count_the_header_and_blank_lines(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("label,a\n0,1\n\n1,2\n# a comment\n2,3\n0,4\n-3,5\n1,6\n")
    with pytest.raises(DataError, match=r"data\.csv, line 8: label -3 is negative"):
        load_csv(p)
    q = tmp_path / "test.csv"
    csv_with_labels(q, [0, 1, 2.5])
    csv_with_labels(p, BASE)
    with pytest.raises(DataError, match=r"test\.csv, line 4: label 2\.5 is not an integer"):
        load_csv(p, test_path=q)


def test_label_codes_without_a_zero_map_to_classes_in_order(tmp_path):
    """Labels 1..k (MATLAB), -1/+1 or 3/4 are codes, mapped in increasing order to 0..k-1."""
    for codes in ([1, 2, 3], [-1, 1], [3, 4]):
        p = tmp_path / "codes.csv"
        csv_with_labels(p, codes * 10)
        d = load_csv(p)
        assert d.n_classes == len(codes) and set(d.y_train.tolist()) | set(d.y_test.tolist()) == set(range(len(codes)))
    ys, c = class_labels([(np.array([5.0, 7.0, 5.0]), str), (np.array([9]), str)])
    assert c == 3 and [y.tolist() for y in ys] == [[0, 1, 0], [2]]
    ys, c = class_labels([(np.array([0, 2, 1]), str)])
    assert c == 3 and ys[0].tolist() == [0, 2, 1]


def test_mnist_labels_must_be_digits(tmp_path):
    """An MNIST label file holding 10 or 255 is refused (it would have trained as 11 or 12 classes)."""
    mnist_folder(tmp_path, gz=False)
    labels = (np.arange(30) % 10).astype(np.uint8)
    for value in (10, 255):
        labels[17] = value
        write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
        with pytest.raises(DataError) as e:
            load_mnist(tmp_path)
        assert str(e.value) == (f"{tmp_path / 'train-labels-idx1-ubyte'}, index 17: label {value} is not a class of "
                                f"this data set (expected an integer in 0..9)")
    labels[17] = 7
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    assert load_mnist(tmp_path).n_classes == 10


def test_cifar_labels_name_their_batch(tmp_path):
    base = cifar_folder(tmp_path)
    with open(base / "data_batch_2", "rb") as f:
        d = pickle.load(f)
    d[b"labels"][3] = 12
    with open(base / "data_batch_2", "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(DataError, match=r"data_batch_2, label 3: label 12 is not a class of this data set"):
        load_cifar10(tmp_path)


def test_npz_and_mat_labels(tmp_path):
    rng = np.random.default_rng(3)
    y = np.array([0, 1, 2] * 6 + [0, -1], dtype=float)
    np.savez(tmp_path / "s.npz", x_train=rng.normal(size=(20, 3)), y_train=y, x_test=rng.normal(size=(3, 3)),
             y_test=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"s\.npz: y_train, index 19: label -1 is negative"):
        load_npz(tmp_path / "s.npz")
    scipy.io.savemat(tmp_path / "m.mat", {"X": rng.normal(size=(20, 4)), "Y": np.r_[[1, 2] * 9, 1, 1.5][:, None]})
    with pytest.raises(DataError, match=r"m\.mat: Y, index 19: label 1\.5 is not an integer"):
        load_mat(tmp_path / "m.mat")


@pytest.mark.parametrize("text, message", [
    ("0,1,x\n0,1,2\n1,2,3\n", "line 1: 'x' (column 3) is not a number but the other fields are"),
    ("label,a,b\n", "a header line and no rows of data"),
    ("label,a,b\n0,1,2\n1,2,3\n0,nan,4\n1,3,3\n", "line 4, column 2: nan is not a finite number"),
    ("0,1,2\n1,-inf,3\n0,1,4\n1,3,3\n", "line 2, column 2: -inf is not a finite number"),
    ("\n0,1,2\n", "line 1: the first line is empty"),
])
def test_csv_edge_cases_are_one_clear_error(tmp_path, text, message):
    """Header rule: all names = header (skipped), all numbers = data, a mix = refused as ambiguous (it was silently
    dropped as a header); a header-only file gives no numpy UserWarning."""
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as e:
            load_csv(p)
    assert f"bad.csv, {message}" in str(e.value) or f"bad.csv: {message}" in str(e.value), str(e.value)


def test_a_header_of_names_is_skipped_and_a_numeric_first_line_is_data(tmp_path):
    p = tmp_path / "d.csv"
    csv_with_labels(p, BASE, header="label,a,b")
    assert len(load_csv(p, test_last=5).x_train) == 25
    csv_with_labels(p, BASE, header=None)
    assert len(load_csv(p, test_last=5).x_train) == 25


@pytest.mark.parametrize("gz", [False, True])
def test_a_binary_file_passed_as_csv_prints_no_bytes(tmp_path, capsys, gz):
    p = tmp_path / "model.csv"
    payload = bytes(range(256)) * 40
    (gzip.open if gz else open)(p, "wb").write(payload)
    code = main(["train", "--dataset", "csv", "--data", str(p), "--epochs", "1", "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"sparta: error: {p} is a binary file, not a CSV text file")
    assert err.isascii() and "\\x" not in err, err
    p.write_bytes(("label,a\n" + "0,1\n1,\xe9\n").encode("latin-1"))  # not UTF-8
    code = main(["train", "--dataset", "csv", "--data", str(p), "--epochs", "1", "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a UTF-8 text file" in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_bad_label_in_one_line(tmp_path, capsys):
    p = tmp_path / "data.csv"
    csv_with_labels(p, [*BASE, "-1"])
    code = main(["train", "--dataset", "csv", "--data", str(p), "--epochs", "1", "--out", str(tmp_path / "r"), "-q"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and not (tmp_path / "r").exists()
    assert captured.err == f"sparta: error: {p}, line 32: label -1 is negative, but the labels count classes from 0 " \
                           "(expected integers in 0..2)\n"
