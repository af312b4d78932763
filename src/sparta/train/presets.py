"""Published settings, by name: ``sparta train --preset NAME`` (each setting can be overridden).

* ``set-mlp-fashionmnist`` — SET-MLP on Fashion-MNIST (Mocanu et al. 2018; Curci et al. 2021 for All-ReLU):
  784-1000-1000-1000-10, ε = 20, ζ = 0.3, SGD lr 0.01, momentum 0.9, weight decay 2e-4, dropout 0.3,
  batch 128, All-ReLU α = 0.6, 500 epochs.
* ``set-mlp-cifar10`` — SET-MLP on CIFAR-10: 3072-4000-1000-4000-10, ε = 20, All-ReLU α = 0.75, otherwise
  as above, 1000 epochs.
* ``set-mlp-madelon`` — SET-MLP on Madelon (Liu et al. 2021, truly sparse MLPs): 500-400-100-400-1, ε = 10,
  Xavier-uniform initialisation, ReLU, one sigmoid output unit trained with MSE, batch 32, 500 epochs.
  Without ``--data`` it uses the embedded Madelon-style set; give ``--dataset csv``/``npz``/``mat`` and
  ``--data`` for the original files.
* ``scale-10m`` — a truly sparse MLP with 12.8 million hidden neurons (Curci, Mocanu & Pechenizkiy 2021):
  1000-3.2M-3.2M-3.2M-3.2M-10, ε = 1 (25.6 M connections), All-ReLU α = 0.6, dropout 0.1, Adam lr 0.01 with
  per-layer rates (``lr_fan_in`` 100: the output layer, where a unit sums ~320 000 inputs, learns at
  lr · 100 / 320 000; the hidden layers, fan-in ~2, at lr), batch 64, SET once per epoch (ζ = 0.3),
  Importance Pruning after epoch 1 (20 % of each hidden layer; at ε = 1 a third of the first layer's neurons
  have no incoming connection, and of those tied at importance 0 only the share goes), input gradients by
  scatter, 2 epochs of the generated ``classification`` set (8192 training and 2048 test samples, 1000
  features of which 20 informative, 10 classes). Timings, memory and accuracy in docs/benchmarks/scale.md.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range (the CLI reports it and exits with status 2). Defined here,
    the lowest module that raises it (an unknown preset); :mod:`sparta.train.config` imports it from here."""


_SGD = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 2e-4}

PRESETS: dict[str, dict[str, Any]] = {
    "set-mlp-fashionmnist": {
        "dataset": "fashionmnist", "hidden": [1000, 1000, 1000], "algo": "set", "epsilon": 20.0, "zeta": 0.3,
        **_SGD, "dropout": 0.3, "batch_size": 128, "activation": "allrelu", "alpha": 0.6, "init": "uniform",
        "loss": "ce", "epochs": 500, "compare_dense": False,
    },
    "set-mlp-cifar10": {
        "dataset": "cifar10", "hidden": [4000, 1000, 4000], "algo": "set", "epsilon": 20.0, "zeta": 0.3,
        **_SGD, "dropout": 0.3, "batch_size": 128, "activation": "allrelu", "alpha": 0.75, "init": "uniform",
        "loss": "ce", "epochs": 1000, "compare_dense": False,
    },
    "set-mlp-madelon": {
        "dataset": "madelon", "hidden": [400, 100, 400], "algo": "set", "epsilon": 10.0, "zeta": 0.3,
        **_SGD, "dropout": 0.0, "batch_size": 32, "activation": "relu", "init": "xavier_uniform",
        "loss": "mse", "epochs": 500, "compare_dense": False,
    },
    "scale-10m": {
        "dataset": "classification",
        "data_options": {"n_train": 8192, "n_test": 2048, "n_features": 1000, "n_informative": 20, "n_classes": 10},
        "hidden": [3_200_000] * 4, "algo": "set", "epsilon": 1.0, "zeta": 0.3,
        "optimizer": "adam", "lr": 0.01, "lr_fan_in": 100.0, "weight_decay": 0.0,
        "dropout": 0.1, "batch_size": 64, "activation": "allrelu", "alpha": 0.6, "init": "uniform", "loss": "ce",
        "epochs": 2, "compare_dense": False, "transpose": "scatter", "importance_pruning": True,
        "ip_percentile": 20.0, "ip_every": 1, "checkpoint_every": 1,
    },
}

DESCRIPTIONS = {
    "set-mlp-fashionmnist": "784-1000-1000-1000-10, SET eps=20 zeta=0.3, All-ReLU 0.6, dropout 0.3, SGD 0.01/0.9/2e-4",
    "set-mlp-cifar10": "3072-4000-1000-4000-10, SET eps=20 zeta=0.3, All-ReLU 0.75, dropout 0.3, SGD 0.01/0.9/2e-4",
    "set-mlp-madelon": "500-400-100-400-1, SET eps=10, Xavier init, ReLU, sigmoid output + MSE, batch 32",
    "scale-10m": "1000-[4 x 3.2M]-10 (12.8M hidden neurons), SET eps=1, Importance Pruning, 2 epochs, generated data",
}


def preset_settings(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (a copy); :class:`ConfigError` naming the known presets otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return {k: (list(v) if isinstance(v, list) else v) for k, v in PRESETS[name].items()}
