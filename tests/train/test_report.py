"""``report`` writes valid PNG files for a run (and its dense twin)."""

from __future__ import annotations

import numpy as np

from sparta.rundir.stats import weight_layers
from sparta.train.config import RunConfig
from sparta.train.report import (
    PLOTS,
    figure_connections,
    figure_degrees,
    figure_weights,
    image_shape,
    neurons_change,
    pick_snapshots,
    report,
)
from sparta.train.runs import load_model, train

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


def _rows(neurons, active, conns=100):
    return [{"epoch": e + 1, "connections": conns, "neurons": n, "active_neurons": a, "train_acc": 0.5,
             "test_acc": 0.5, "train_loss": 1.0, "test_loss": 1.0}
            for e, (n, a) in enumerate(zip(neurons, active, strict=True))]


def test_connections_show_the_neuron_panel_only_when_neurons_change():
    steady = [("sparse", "set", _rows([30, 30, 30], [30, 30, 30])), ("dense", "dense", _rows([30] * 3, [30] * 3, 900))]
    fig = figure_connections(steady)
    assert len(fig.axes) == 1 and "constant" in fig.axes[0].get_title()
    assert "(100 at the end)" in fig.axes[0].get_legend().get_texts()[0].get_text()
    pruned = [("sparse", "set", _rows([30, 24, 20], [30, 22, 20]))]
    assert neurons_change(pruned) and len(figure_connections(pruned).axes) == 2


def test_input_connectivity_epochs_are_evenly_spaced():
    snaps = [(e, np.zeros(4)) for e in range(1, 51)]
    assert [e for e, _ in pick_snapshots(snaps)] == [1, 17, 34, 50]
    assert [e for e, _ in pick_snapshots(snaps[:3])] == [1, 2, 3]


def test_titles_and_axes_say_what_the_plots_show(tmp_path):
    train(RunConfig.from_dict({"hidden": [16, 12], "epsilon": 4.0, "epochs": 2, "batch_size": 256}), tmp_path / "run")
    _, session, _ = load_model(tmp_path / "run")
    layers = weight_layers(session.model)
    fig = figure_weights([("sparse", layers)], "epoch 2")
    assert "at epoch 2" in fig._suptitle.get_text() and fig.axes[0].get_ylabel() == "probability density"
    fig = figure_degrees(layers, "SET (sparse) model at epoch 2")
    assert "SET (sparse) model at epoch 2" in fig._suptitle.get_text()
