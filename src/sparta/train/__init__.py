"""Supervised training: embedded data sets, sparse MLPs, the training loop, run directories and reports.

The names below are imported on first use (the ``sparta`` command reads :mod:`sparta.train.config` without
loading torch)."""

from sparta._lazy import lazy_attributes

_EXPORTS = {"EMBEDDED": "sparta.train.data", "Dataset": "sparta.train.data", "digits": "sparta.train.data",
            "madelon": "sparta.train.data", "teacher_student": "sparta.train.data", "EpochStats": "sparta.train.loop",
            "evaluate": "sparta.train.loop", "fit": "sparta.train.loop", "train_epoch": "sparta.train.loop",
            "mlp": "sparta.train.models"}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = ["EMBEDDED", "Dataset", "EpochStats", "digits", "evaluate", "fit", "madelon", "mlp", "teacher_student",
           "train_epoch"]
