"""Supervised training: embedded data sets, sparse MLPs and the training loop."""

from sparta.train.data import EMBEDDED, Dataset, digits, madelon, teacher_student
from sparta.train.loop import EpochStats, evaluate, fit, train_epoch
from sparta.train.models import mlp

__all__ = ["EMBEDDED", "Dataset", "EpochStats", "digits", "evaluate", "fit", "madelon", "mlp", "teacher_student",
           "train_epoch"]
