"""Readers for data files you already have (nothing is ever downloaded).

Every reader returns a :class:`~sparta.train.data.Dataset` of float32 features ``(n, features)``,
standardised with the training part's mean and standard deviation, and int64 labels ``0 … k-1``.

* :func:`load_mnist` — MNIST / Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) in one folder.
* :func:`load_cifar10` — CIFAR-10 python batches (``data_batch_1`` … ``data_batch_5``, ``test_batch``: pickled dicts
  with ``b"data"`` (n × 3072 uint8) and ``b"labels"``), in ``cifar-10-batches-py/`` or the folder itself.
  These are Python pickles: only read files from the official archive or your own.
* :func:`load_csv` — one row per sample, the label in one column (the first by default, as in HIGGS).
* :func:`load_npz` — ``x_train``, ``y_train``, ``x_test``, ``y_test`` arrays.
* :func:`load_mat` — MATLAB ``.mat`` microarray sets (``X`` samples × features, ``Y`` labels), split with a seed.

:func:`load_dataset` picks an embedded set or a reader by name. A missing file raises
:class:`DataFileNotFound` naming the file expected and where; malformed content raises :class:`DataError`.
"""

from __future__ import annotations

import gzip
import inspect
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparta.train.data import EMBEDDED, Dataset

FILE_DATASETS = ("mnist", "fashionmnist", "cifar10", "csv", "npz", "mat")

IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


class DataError(ValueError):
    """A data file exists but its content is not what the reader expects (wrong shape, format, labels)."""


class DataFileNotFound(DataError, FileNotFoundError):
    """An expected data file or folder is missing; the message says which and where."""


# ------------------------------------------------------------------ helpers


def _column(y: np.ndarray) -> np.ndarray:
    """Labels stored as a column or row vector (``(n, 1)``, ``(1, n)``) as ``(n,)``."""
    y = np.asarray(y)
    return y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y


Locate = Callable[[int], str]  # a label's index → where it is, e.g. "data.csv, line 12"


def _index_in(where: str) -> Locate:
    return lambda i: f"{where}, index {i}"


def class_labels(parts: list[tuple[np.ndarray, Locate]], declared: int | None = None) -> tuple[list[np.ndarray], int]:
    """Check labels and turn them into class indices ``0 … C-1``; returns them (int64, one array per part) and C.

    The rule: every label must be a finite integer (NaN, infinities, 1.5 and text are refused). With a
    ``declared`` class set (MNIST, Fashion-MNIST, CIFAR-10: 10 classes) every label must lie in
    ``0 … declared-1``. Otherwise the class set is inferred from the labels of all parts together: where some
    label is 0 the labels are class indices, so none may be negative and none may skip a class (labels 0, 1, 2
    and 10 leave classes 3 … 9 without a sample: refused); without a 0 they are codes (MATLAB's 1 … k, -1/+1,
    3/4) mapped in increasing order to ``0 … k-1``. A refused label raises :class:`DataError` naming where it is
    (``locate(index)``: file and line or index) and its value.
    """
    checked = []
    for y, locate in parts:
        y = np.asarray(y)
        if y.dtype == bool:
            y = y.astype(np.int64)
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{locate(0)}: labels must be numbers, got {y.dtype} values such as {y.reshape(-1)[:1]}")
        if np.issubdtype(y.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
            if len(bad):
                v = float(y[bad[0]])
                what = "is not a number" if np.isnan(v) else "is not finite" if np.isinf(v) else "is not an integer"
                raise DataError(f"{locate(int(bad[0]))}: label {v:g} {what}; labels must be integer classes")
        checked.append(y.astype(np.int64))
    if declared is not None:
        for y, (_, locate) in zip(checked, parts, strict=True):
            bad = np.flatnonzero((y < 0) | (y >= declared))
            if len(bad):
                raise DataError(f"{locate(int(bad[0]))}: label {int(y[bad[0]])} is not a class of this data set "
                                f"(expected an integer in 0..{declared - 1})")
        return checked, declared
    values = np.unique(np.concatenate(checked)) if checked else np.zeros(0, np.int64)
    if 0 in values and values[0] < 0:
        return _refuse(checked, parts, int(values[0]), f"is negative, but the labels count classes from 0 "
                       f"(expected integers in 0..{int(values[-1])})")
    if 0 in values:
        gaps = np.flatnonzero(np.diff(values) > 1)
        if len(gaps):
            lo, hi = int(values[gaps[0]]), int(values[gaps[0] + 1])
            missing = f"{lo + 1}" if hi - lo == 2 else f"{lo + 1}..{hi - 1}"
            return _refuse(checked, parts, hi, f"skips class{'es' if hi - lo > 2 else ''} {missing}, which no sample "
                           f"has (labels that include 0 are class indices 0..C-1, every class with samples)")
        return checked, int(values[-1]) + 1
    return [np.searchsorted(values, y).astype(np.int64) for y in checked], len(values)


def _refuse(checked: list[np.ndarray], parts: list[tuple[np.ndarray, Locate]], value: int, why: str):
    """Raise the :class:`DataError` for the first label equal to ``value``."""
    for y, (_, locate) in zip(checked, parts, strict=True):
        hits = np.flatnonzero(y == value)
        if len(hits):
            raise DataError(f"{locate(int(hits[0]))}: label {value} {why}")
    raise DataError(f"label {value} {why}")


def _as_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                where: str, classes: int | None = None, locate: tuple[Locate, Locate] | None = None) -> Dataset:
    """Flatten, check shapes, turn labels into classes ``0…k-1`` (:func:`class_labels`, over both parts; ``classes``:
    the declared class count; ``locate``: where the train and test labels' indices are, for its messages),
    standardise with the train part."""
    x_train = np.asarray(x_train)
    x_test = np.asarray(x_test)
    if x_train.ndim < 2 or x_test.ndim < 2:
        raise DataError(f"{where}: features must have a sample axis and at least one feature axis, "
                        f"got shapes {x_train.shape} (train) and {x_test.shape} (test)")
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    y_train, y_test = _column(y_train), _column(y_test)
    if y_train.ndim != 1 or y_test.ndim != 1:
        raise DataError(f"{where}: labels must be one per sample (1-D), got shapes {y_train.shape} and {y_test.shape}")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(f"{where}: {len(x_train)} training samples but {len(y_train)} labels, "
                        f"{len(x_test)} test samples but {len(y_test)} labels")
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(f"{where}: training samples have {x_train.shape[1]} features but test samples "
                        f"{x_test.shape[1]}")
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataError(f"{where}: need at least one training and one test sample, got {len(x_train)} and {len(x_test)}")
    if x_train.shape[1] == 0:
        raise DataError(f"{where}: samples have no features")
    if not (np.issubdtype(x_train.dtype, np.number) and np.issubdtype(x_test.dtype, np.number)):
        raise DataError(f"{where}: features must be numbers, got {x_train.dtype} and {x_test.dtype}")
    if locate is None:
        locate = (_index_in(f"{where}: training labels"), _index_in(f"{where}: test labels"))
    (y_tr, y_te), n_classes = class_labels([(y_train, locate[0]), (y_test, locate[1])], classes)
    present = np.unique(np.concatenate([y_train, y_test]))
    if len(present) < 2:
        raise DataError(f"{where}: labels must hold at least two classes, got {present.tolist()}")
    xtr = x_train.astype(np.float32)
    xte = x_test.astype(np.float32)
    for part, xs in (("training", xtr), ("test", xte)):
        bad = np.argwhere(~np.isfinite(xs))
        if len(bad):
            i, j = (int(v) for v in bad[0])
            raise DataError(f"{where}: {part} sample {i}, feature {j} is {xs[i, j]} (features must be finite numbers)")
    mu = xtr.mean(0, dtype=np.float64).astype(np.float32)
    sd = xtr.std(0, dtype=np.float64).astype(np.float32)
    sd[sd == 0] = 1.0
    xtr -= mu
    xtr /= sd
    xte -= mu
    xte /= sd
    return Dataset(name, torch.from_numpy(xtr), torch.from_numpy(y_tr), torch.from_numpy(xte), torch.from_numpy(y_te),
                   n_classes)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, where: str):
    if not isinstance(test_fraction, int | float) or isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = int(round(test_fraction * len(x)))
    if not 0 < n_test < len(x):
        raise DataError(f"{where}: {len(x)} samples cannot be split with test_fraction={test_fraction}")
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and n_test >= len(counts) and len(x) - n_test >= len(counts) else None
    return train_test_split(x, y, test_size=n_test, random_state=seed, stratify=stratify)


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of ``names`` (or ``name.gz``) present in ``folder``."""
    if not folder.exists():
        raise DataFileNotFound(f"data folder {folder} does not exist (it should hold the {what})")
    if not folder.is_dir():
        raise DataFileNotFound(f"{folder} is not a folder (expected the folder that holds the {what})")
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataFileNotFound(f"{what}: expected {names[0]} or {names[0]}.gz in {folder}")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped or not) as an array of its declared shape and type."""
    p = Path(path)
    if not p.is_file():
        raise DataFileNotFound(f"IDX file not found: {p}")
    try:
        with _open(p) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{p} is not an IDX file (expected magic bytes 00 00 <type> <ndim>, got {raw[:4].hex(' ')})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != size:
        raise DataError(f"{p}: IDX header declares shape {shape} ({size} bytes of data) but the file holds "
                        f"{len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# ------------------------------------------------------------------ readers


def load_mnist(folder: str | Path, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files in ``folder`` (``.gz`` or not; ``-idx3-`` or ``.idx3-`` names)."""
    root = Path(folder)
    arrays, paths = {}, {}
    for key, stem in IDX_FILES.items():
        alt = stem.replace("-idx", ".idx")
        paths[key] = _find(root, (stem, alt), f"{name} {key.replace('_', ' ')}")
        arrays[key] = read_idx(paths[key])
    for part in ("train", "test"):
        img, lab = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if img.ndim != 3:
            raise DataError(f"{root}: {part} images must be a 3-D IDX array (n, rows, cols), got shape {img.shape}")
        if lab.ndim != 1:
            raise DataError(f"{root}: {part} labels must be a 1-D IDX array, got shape {lab.shape}")
    return _as_dataset(name, arrays["train_images"], arrays["train_labels"], arrays["test_images"],
                       arrays["test_labels"], str(root), classes=10,
                       locate=(_index_in(str(paths["train_labels"])), _index_in(str(paths["test_labels"]))))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with _open(path) as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict with b'data' and b'labels', got {type(d).__name__}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: expected keys b'data' and b'labels', got {sorted(map(repr, d))}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must have shape (n, 3072) (32×32×3 images), got {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    return data, labels


def load_cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10 from its python batches, in ``folder/cifar-10-batches-py`` or ``folder`` itself."""
    root = Path(folder)
    sub = root / "cifar-10-batches-py"
    base = sub if sub.is_dir() else root
    paths = [_find(base, (name,), f"CIFAR-10 batch {name}") for name in (*CIFAR_TRAIN, CIFAR_TEST)]
    parts = [_read_cifar_batch(p) for p in paths[:-1]]
    x_test, y_test = _read_cifar_batch(paths[-1])
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    ends = np.cumsum([len(p[1]) for p in parts])

    def in_batch(i: int) -> str:  # a training label's batch file and index in it
        b = int(np.searchsorted(ends, i, side="right"))
        return f"{paths[b]}, label {i - (int(ends[b - 1]) if b else 0)}"

    return _as_dataset("cifar10", x_train, y_train, x_test, y_test, str(base), classes=10,
                       locate=(in_batch, lambda i: f"{paths[-1]}, label {i}"))


def _first_line(path: Path) -> str:
    """The first line of a text file; :class:`DataError` for a binary file (a NUL byte or bytes that are not UTF-8
    in its first 64 KiB) or an empty one, without printing its bytes."""
    try:
        with _open(path) as f:
            head = f.read(1 << 16)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if b"\x00" in head:
        raise DataError(f"{path} is a binary file, not a CSV text file (expected lines of numbers separated by commas)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) < 1 << 16 or e.start < len(head) - 4:  # not just a character cut at the end of the read
            raise DataError(f"{path} is not a UTF-8 text file (byte {e.start} is not text): expected a CSV file of "
                            "numbers separated by commas") from None
        text = head[:e.start].decode("utf-8")
    first = text.split("\n", 1)[0].strip()
    if not first:
        raise DataError(f"{path}: the file is empty" if not text.strip() else f"{path}, line 1: the first line is "
                        "empty (expected a header of column names or a first row of numbers)")
    return first


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_lines(path: Path, delimiter: str = ",") -> int:
    """1 when the file's first line is a header, 0 when it is data.

    The rule: a first line whose fields all read as numbers is data; one whose fields are all not numbers (column
    names, e.g. ``label,x1,x2``) is a header, skipped; a first line mixing the two (``0,1,x``: a damaged data line,
    or a header with numeric names) is ambiguous and refused with :class:`DataError` naming the fields.
    """
    first = _first_line(path)
    fields = [f.strip() for f in first.split(delimiter)]
    numbers = [_is_number(f) for f in fields]
    if all(numbers):
        return 0
    if not any(numbers):
        return 1
    words = ", ".join(f"{f[:20]!r} (column {i})" for i, (f, n) in enumerate(zip(fields, numbers, strict=True), 1)
                      if not n)
    raise DataError(f"{path}, line 1: {words} {'is' if sum(not n for n in numbers) == 1 else 'are'} not a number but "
                    f"the other fields are: neither a header (names only) nor a row of numbers; fix the line, or "
                    f"give every column a name that is not a number")


def _read_csv_array(path: Path, delimiter: str, max_rows: int | None) -> np.ndarray:
    """The file's rows as a float64 array ``(rows, columns)`` (the header, if any, skipped: :func:`_header_lines`)."""
    skip = _header_lines(path, delimiter)
    try:
        with _open(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": refused below in one line
            arr = np.loadtxt(f, delimiter=delimiter, skiprows=skip, max_rows=max_rows, dtype=np.float64, ndmin=2)
    except ValueError:
        raise DataError(_csv_problem(path, delimiter, skip)) from None
    if len(arr) == 0:
        raise DataError(f"{path}: a header line and no rows of data (expected rows of numbers after the header)")
    return arr


def _csv_problem(path: Path, delimiter: str, skip: int) -> str:
    """Where and why a CSV file does not parse as numbers, naming the file's 1-based line (as editors count)."""
    width = None
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", "replace").strip()
            if number <= skip or not line or line.startswith("#"):
                continue
            fields = line.split(delimiter)
            for column, text in enumerate(fields, start=1):
                if not _is_number(text):
                    return (f"{path}, line {number}: cannot read {text.strip()[:40]!r} (column {column}) as a number; "
                            f"expected numbers separated by {delimiter!r}")
            if width is not None and len(fields) != width:
                return f"{path}, line {number}: {len(fields)} columns, but the lines before it have {width}"
            width = len(fields)
    return f"{path}: cannot parse as numbers separated by {delimiter!r}"


def _csv_line(path: Path, row: int) -> str:
    """``"path, line N"`` for data row ``row`` (0-based, as numpy reads them: the header, blank and ``#`` comment
    lines are not rows; N is the 1-based line an editor shows)."""
    skip = _header_lines(path)
    seen = -1
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", "replace").strip()
            if number <= skip or not line or line.startswith("#"):
                continue
            seen += 1
            if seen == row:
                return f"{path}, line {number}"
    return f"{path}, data row {row + 1}"


def _check_csv(path: Path, arr: np.ndarray, label: int) -> None:
    """Refuse labels that are not classes (:func:`class_labels`) and features that are not finite, naming the
    file's line (and column)."""
    class_labels([(arr[:, label], lambda i: _csv_line(path, i))])
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise DataError(f"{_csv_line(path, row)}, column {col + 1}: {arr[row, col]} is not a finite number "
                        "(features must be finite)")


def load_csv(path: str | Path, label_column: int = 0, test_fraction: float = 0.2, seed: int = 0,
             delimiter: str = ",", test_last: int | None = None, max_rows: int | None = None,
             test_path: str | Path | None = None) -> Dataset:
    """A CSV file of numbers, one sample per row, with its label in column ``label_column`` (negative counts
    from the end); ``.gz`` files are read directly.

    Header: a first line whose fields are all not numbers (column names) is skipped; one whose fields all read as
    numbers is the first row; a first line mixing both is refused as ambiguous. Labels must be integer classes
    (see :func:`class_labels`: declared by nothing here, so inferred from the labels) and features finite numbers;
    a refused value is named with its file, line and column.

    The test part is ``test_path`` (another CSV) if given, else the last ``test_last`` rows (HIGGS: 500000),
    else a random ``test_fraction`` of the rows (stratified, ``seed``). ``max_rows`` reads only the first rows.
    ``path`` may be a folder holding ``train.csv`` and ``test.csv``.
    """
    p = Path(path)
    if p.is_dir() and test_path is None:
        train, test = _find(p, ("train.csv",), "CSV training data"), _find(p, ("test.csv",), "CSV test data")
        p, test_path = train, test
    if not p.is_file():
        raise DataFileNotFound(f"CSV file not found: {p}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2):
        raise DataError(f"max_rows must be an int ≥ 2, got {max_rows!r}")
    arr = _read_csv_array(p, delimiter, max_rows)
    ncol = arr.shape[1]
    if isinstance(label_column, bool) or not isinstance(label_column, int) or not -ncol <= label_column < ncol:
        raise DataError(f"label_column must be an int in [{-ncol}, {ncol}) for {p} ({ncol} columns), got {label_column!r}")
    if ncol < 2:
        raise DataError(f"{p}: need a label column and at least one feature column, got {ncol} column")
    label = label_column % ncol
    _check_csv(p, arr, label)

    def xy(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.delete(a, label, axis=1), a[:, label]

    if test_path is not None:
        tp = Path(test_path)
        if not tp.is_file():
            raise DataFileNotFound(f"CSV test file not found: {tp}")
        test = _read_csv_array(tp, delimiter, None)
        if test.shape[1] != ncol:
            raise DataError(f"{tp} has {test.shape[1]} columns but {p} has {ncol}")
        _check_csv(tp, test, label)
        class_labels([(arr[:, label], lambda i: _csv_line(p, i)), (test[:, label], lambda i: _csv_line(tp, i))])
        (xtr, ytr), (xte, yte) = xy(arr), xy(test)
    elif test_last is not None:
        if isinstance(test_last, bool) or not isinstance(test_last, int) or not 0 < test_last < len(arr):
            raise DataError(f"test_last must be an int in [1, {len(arr) - 1}] for {p} ({len(arr)} rows), got {test_last!r}")
        (xtr, ytr), (xte, yte) = xy(arr[:-test_last]), xy(arr[-test_last:])
    else:
        x, y = xy(arr)
        xtr, xte, ytr, yte = _split(x, y, test_fraction, seed, str(p))
    return _as_dataset(p.name.split(".")[0] or "csv", xtr, ytr, xte, yte, str(p))


def _single_file(path: str | Path, suffix: str, holds: str) -> Path:
    """``path`` itself, or the one ``*suffix`` file in the folder ``path``; ``DataFileNotFound`` otherwise."""
    p = Path(path)
    if p.is_dir():
        hits = sorted(p.glob(f"*{suffix}"))
        if len(hits) != 1:
            raise DataFileNotFound(f"expected one {suffix} file ({holds}) in {p}, found {len(hits)}")
        p = hits[0]
    if not p.is_file():
        raise DataFileNotFound(f"{suffix} file not found: {p} (expected {holds})")
    return p


def load_npz(path: str | Path) -> Dataset:
    """A NumPy ``.npz`` archive with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    p = _single_file(path, ".npz", "arrays x_train, y_train, x_test, y_test")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"{p}: missing arrays {missing}; it holds {z.files}")
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{p}: not a readable .npz archive ({e})") from None
    return _as_dataset(p.stem, *arrays, where=str(p), locate=(_index_in(f"{p}: y_train"), _index_in(f"{p}: y_test")))


def load_mat(path: str | Path, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """A MATLAB ``.mat`` file with ``X`` (samples × features) and ``Y`` (labels), as the scikit-feature
    microarray sets; split into train and test parts (stratified, ``seed``)."""
    import scipy.io

    p = _single_file(path, ".mat", "a MATLAB file with X and Y")
    try:
        m = scipy.io.loadmat(p)
    except (ValueError, OSError, NotImplementedError) as e:
        raise DataError(f"{p}: not a readable MATLAB file ({e})") from None
    keys = {k.lower(): k for k in m if not k.startswith("__")}
    if "x" not in keys or "y" not in keys:
        raise DataError(f"{p}: expected variables X and Y, got {sorted(keys.values())}")
    x = np.asarray(m[keys["x"]])
    y = np.asarray(m[keys["y"]])
    if hasattr(x, "toarray"):
        x = x.toarray()
    if x.ndim != 2:
        raise DataError(f"{p}: X must be 2-D (samples × features), got shape {x.shape}")
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{p}: Y must hold one label per row of X ({len(x)}), got shape {y.shape}")
    class_labels([(y, _index_in(f"{p}: Y"))])
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed, str(p))
    return _as_dataset(p.stem, xtr, ytr, xte, yte, str(p))


# ----------------------------------------------------------------- dispatch


def _readers() -> dict[str, Callable[..., Dataset]]:
    return {"mnist": lambda path, **kw: load_mnist(path, "mnist", **kw),
            "fashionmnist": lambda path, **kw: load_mnist(path, "fashionmnist", **kw),
            "cifar10": load_cifar10, "csv": load_csv, "npz": load_npz, "mat": load_mat}


_EXPECTED = {
    "mnist": "the folder holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
             "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]",
    "fashionmnist": "the folder holding Fashion-MNIST's train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                    "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]",
    "cifar10": "the folder holding cifar-10-batches-py/ (data_batch_1 … data_batch_5, test_batch)",
    "csv": "a CSV file (label in the first column unless --label-column says otherwise)",
    "npz": "an .npz file with x_train, y_train, x_test, y_test",
    "mat": "a MATLAB .mat file with X and Y",
}


def _options_for(fn: Callable[..., Any], options: dict[str, Any], name: str, skip: tuple[str, ...]) -> dict[str, Any]:
    """``options`` checked against ``fn``'s keyword parameters: each name must be one of them, and a value must
    have the type of the parameter's default where that is a bool, int, float or str (an int passes for a float),
    and an int whose default is positive must be positive."""
    sig = inspect.signature(fn).parameters
    params = [p for p in sig if p not in skip]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DataError(f"unknown data option(s) {unknown} for data set {name!r}; it accepts {params or 'none'}")
    for key, value in options.items():
        default = sig[key].default
        want: tuple[type, ...] | None = None
        if isinstance(default, bool):
            want = (bool,)
        elif isinstance(default, int):
            want = (int,)
        elif isinstance(default, float):
            want = (int, float)
        elif isinstance(default, str):
            want = (str,)
        kind = {bool: "a bool", int: "an int", float: "a number", str: "a string"}[want[-1]] if want else ""
        if want is not None and (not isinstance(value, want) or (isinstance(value, bool) and bool not in want)):
            raise DataError(f"data option {key!r} of data set {name!r} must be {kind} (default {default!r}), "
                            f"got {value!r}")
        if want == (int,) and default >= 1 and value < 1:  # sample, feature and class counts
            raise DataError(f"data option {key!r} of data set {name!r} must be a positive int (default {default!r}), "
                            f"got {value!r}")
    return options


def load_dataset(name: str, path: str | Path | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Data set ``name``: an embedded one (``digits``, ``madelon``, ``teacher_student``; ``path`` unused) or a
    file reader (``mnist``, ``fashionmnist``, ``cifar10``, ``csv``, ``npz``, ``mat``) applied to ``path``.

    ``seed`` fixes the train/test split where one is drawn; ``options`` go to the loader (checked by name).
    """
    if name in EMBEDDED:
        fn = EMBEDDED[name]
        opts = _options_for(fn, options, name, ("seed",))
        d = fn(seed=seed, **opts)
        if len(d.x_train) == 0 or len(d.x_test) == 0:
            raise DataError(f"data set {name!r} with options {opts} has {len(d.x_train)} training and "
                            f"{len(d.x_test)} test samples; both must be at least 1")
        return d
    readers = _readers()
    if name not in readers:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join([*EMBEDDED, *readers])}")
    if path is None:
        raise DataFileNotFound(f"the {name} data set is read from files you already have (nothing is downloaded): "
                               f"pass --data PATH, {_EXPECTED[name]}")
    target = {"mnist": load_mnist, "fashionmnist": load_mnist, "cifar10": load_cifar10, "csv": load_csv,
              "npz": load_npz, "mat": load_mat}[name]
    opts = _options_for(target, options, name, ("path", "folder", "name"))
    if "seed" in inspect.signature(target).parameters:
        opts.setdefault("seed", seed)
    return readers[name](path, **opts)
