"""``report`` writes valid PNG files for a run (and its dense twin)."""

from __future__ import annotations

from sparta.train.config import RunConfig
from sparta.train.report import PLOTS, image_shape, report
from sparta.train.runs import train

PNG = b"\x89PNG\r\n\x1a\n"


def test_image_shape():
    assert image_shape(784) == (28, 28)
    assert image_shape(64) == (8, 8)
    assert image_shape(3072) == (3, 32, 32)
    assert image_shape(500) is None and image_shape(13) is None and image_shape(4) is None


def test_report_writes_pngs(tmp_path):
    config = RunConfig.from_dict({"hidden": [16, 12], "epsilon": 4.0, "epochs": 2, "batch_size": 256,
                                  "checkpoint_every": 1})
    train(config, tmp_path / "run")
    paths = report(tmp_path / "run")
    assert [p.name for p in paths] == list(PLOTS)
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, p
    assert sorted(f.name for f in (tmp_path / "run" / "plots").iterdir()) == sorted(PLOTS)


def test_report_without_square_input(tmp_path):
    config = RunConfig.from_dict({"dataset": "teacher_student", "data_options": {"n_train": 64, "n_test": 16,
                                  "n_features": 13, "n_classes": 3}, "hidden": [8], "epsilon": 2.0, "epochs": 1,
                                  "algo": "rigl", "compare_dense": False})
    train(config, tmp_path / "run")
    paths = report(tmp_path / "run", tmp_path / "plots")
    assert len(paths) == len(PLOTS) and all(p.read_bytes().startswith(PNG) for p in paths)
