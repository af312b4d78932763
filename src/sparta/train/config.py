"""The resolved settings of a training run: one dataclass, validated, saved with the run as ``config.json``.

Settings are layered, later layers winning: the defaults below (the quick-start run: SET + All-ReLU on
the digits data, compared with the same network dense), a preset (:mod:`sparta.train.presets`), a TOML
(or YAML) config file, then command-line flags. :func:`resolve` applies the layers and validates the
result; every error is a :class:`ConfigError` (a ``ValueError``) whose message names the setting, what
was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparta.train.presets import ConfigError, preset_settings  # ConfigError lives with the lowest module raising it

ALGORITHMS = ("dense", "static", "set", "rigl", "gmp")
ACTIVATIONS = ("allrelu", "relu", "tanh", "sigmoid")
GMP_DISTRIBUTIONS = ("er", "uniform", "erk", "global")
DATASETS = ("digits", "madelon", "teacher_student", "classification", "mnist", "fashionmnist", "cifar10", "csv",
            "npz", "mat")
LOSSES = ("ce", "mse")
OPTIMIZERS = ("sgd", "adam")
TRANSPOSES = ("csc", "scatter")
STORAGE = ("float32", "bfloat16")  # SparseMLP's activation_storage (sparta.kernels.bf16.STORAGE)
INITS = ("uniform", "kaiming_normal", "kaiming_uniform", "xavier_uniform", "normal")


@dataclass
class RunConfig:
    """Every setting of a run. Defaults: the quick-start run (digits, 64-1000-1000-1000-10, SET, All-ReLU).

    Model: ``hidden`` sizes between the data's features and its classes (one output unit when
    ``loss="mse"``). ``lr_fan_in``: a layer whose mean fan-in (connections over outputs) exceeds it learns
    at ``lr · lr_fan_in / fan_in`` (None: every layer at ``lr``; see :func:`sparta.optim.groups.param_groups`; WASAP-SGD too).
    Sparsity: exactly one of ``density`` (fraction of connections per layer) or
    ``epsilon`` (Erdős–Rényi, density ``ε (in + out) / (in · out)``); ``zeta`` is the fraction dropped
    and regrown per update (SET's ζ, RigL's α); ``every`` the optimizer steps between topology updates
    (None: once per epoch). ``algo="gmp"`` starts dense and prunes each layer to the density ``density`` or
    ``epsilon`` gives it (``distribution`` None), or spreads the same overall sparsity by ``distribution``
    (``er``, ``uniform``, ``erk``, or ``global``: one magnitude threshold over all layers).
    ``schedule_epochs``: the epochs RigL's and GMP's schedules are planned over (None: ``epochs``; extending a
    run keeps the schedule it started with). ``compare_dense`` also trains the same network dense (same seed)
    into ``RUN/dense``. ``workers``: train with WASAP-SGD, a parameter server and this many worker processes
    (None: one process); ``parallel`` holds further WASAP-SGD settings (``sync``, ``phase1_fraction``, …, see
    :class:`sparta.parallel.WasapConfig`).

    Scale: ``transpose`` how sparse layers form input gradients (``"csc"``: a gather over a transposed copy,
    8 more bytes per connection; ``"scatter"``: none); ``activation_storage`` ``"bfloat16"`` stores a sparse
    model's hidden activations and their gradients as bfloat16 between layers (faster for wide layers, see
    :class:`sparta.nn.SparseMLP`; the dense twin stays float32); ``eval_batch_size`` the evaluation's batch (None:
    up to 1024, smaller when a batch's activations would exceed 1 GB); ``importance_pruning`` removes the
    hidden neurons at or below the ``ip_percentile``-th percentile of importance after epoch ``ip_start``
    (None: ``ip_every``) and every ``ip_every`` epochs after it (not after the last epoch; with WASAP-SGD,
    ``workers``, the server prunes in phase 1 only: :meth:`sparta.parallel.WasapConfig.ip_epochs`).

    N:M: ``nm`` (``"N:M"``, e.g. ``"2:4"``) builds the hidden layers as N:M sparse layers (the output layer dense)
    and evolves them with SET/RigL inside their blocks (``static``: fixed masks); ``transposable`` makes the masks
    N:M along the columns too; ``nm_vector = 4`` makes them vector-wise (groups of 4 output rows share their
    positions: faster kernels). See :mod:`sparta.train.nm`.
    """

    dataset: str = "digits"
    data: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    hidden: list[int] = field(default_factory=lambda: [1000, 1000, 1000])
    algo: str = "set"
    density: float | None = None
    epsilon: float | None = 20.0
    zeta: float = 0.3
    every: int | None = None
    activation: str = "allrelu"
    alpha: float = 0.6
    dropout: float = 0.1
    init: str = "uniform"
    loss: str = "ce"
    optimizer: str = "sgd"
    lr: float = 0.01
    lr_fan_in: float | None = None
    momentum: float = 0.9
    weight_decay: float = 2e-4
    batch_size: int = 128
    epochs: int = 50
    seed: int = 0
    data_seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 10
    compare_dense: bool = True
    transpose: str = "csc"
    activation_storage: str = "float32"
    eval_batch_size: int | None = None
    importance_pruning: bool = False
    ip_percentile: float = 20.0
    ip_every: int = 10
    ip_start: int | None = None
    preset: str | None = None
    distribution: str | None = None
    schedule_epochs: int | None = None
    workers: int | None = None
    parallel: dict[str, Any] = field(default_factory=dict)
    nm: str | None = None  # N:M hidden layers (issue 33): "2:4", ...; see sparta.train.nm
    transposable: bool = False
    nm_vector: int = 1  # 4: vector-wise N:M (groups of 4 rows share their positions); see sparta.nn.nm.NMLinear

    # ------------------------------------------------------------------ I/O
    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def save(self, path: str | Path) -> None:
        """Write as JSON (indent 2) to ``path``."""
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a ``config.json`` written by :meth:`save` and validate it."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"no run configuration at {p} (expected a run directory written by `sparta train`)")
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> RunConfig:
        """Defaults overridden by ``values`` (unknown keys are an error), validated."""
        return apply(cls(), values, source).validate()

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes).validate()

    # ------------------------------------------------------------ validation
    def validate(self) -> RunConfig:
        """Check every field (types and ranges); returns ``self`` or raises :class:`ConfigError`."""
        _choice("dataset", self.dataset, DATASETS)
        _choice("algo", self.algo, ALGORITHMS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("loss", self.loss, LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        if self.data is not None and not isinstance(self.data, str):
            raise ConfigError(f"data must be a path, got {self.data!r}")
        if not isinstance(self.data_options, dict):
            raise ConfigError(f"data_options must be a table of names to values, got {self.data_options!r}")
        if not isinstance(self.hidden, list | tuple) or not self.hidden:
            raise ConfigError(f"hidden must be a non-empty list of layer sizes, got {self.hidden!r}")
        self.hidden = [_int("hidden sizes", h, 1) for h in self.hidden]
        if self.density is not None and self.epsilon is not None:
            raise ConfigError(f"give density or epsilon, not both (got density={self.density}, epsilon={self.epsilon})")
        if self.algo != "dense" and self.density is None and self.epsilon is None:
            raise ConfigError(f"algo {self.algo!r} needs density or epsilon")
        if self.density is not None:
            self.density = _float("density", self.density, 0.0, 1.0, low_open=True)
        if self.epsilon is not None:
            self.epsilon = _float("epsilon", self.epsilon, 0.0, math.inf, low_open=True, high_open=True)
        self.zeta = _float("zeta", self.zeta, 0.0, 1.0, high_open=True)
        if self.algo == "rigl" and self.zeta == 0:
            raise ConfigError("zeta (RigL's drop fraction α) must be in (0, 1) for algo 'rigl', got 0")
        if self.every is not None:
            self.every = _int("every", self.every, 1)
        self.alpha = _float("alpha", self.alpha, 0.0, 1.0)
        self.dropout = _float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        self.lr = _float("lr", self.lr, 0.0, math.inf, low_open=True, high_open=True)
        if self.lr_fan_in is not None:
            self.lr_fan_in = _float("lr_fan_in", self.lr_fan_in, 0.0, math.inf, low_open=True, high_open=True)
        self.momentum = _float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        self.weight_decay = _float("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        self.batch_size = _int("batch_size", self.batch_size, 1)
        self.epochs = _int("epochs", self.epochs, 1)
        self.seed = _int("seed", self.seed, 0)
        self.data_seed = _int("data_seed", self.data_seed, 0)
        if self.threads is not None:
            self.threads = _int("threads", self.threads, 1)
        self.checkpoint_every = _int("checkpoint_every", self.checkpoint_every, 1)
        if not isinstance(self.compare_dense, bool):
            raise ConfigError(f"compare_dense must be true or false, got {self.compare_dense!r}")
        if self.distribution is not None:
            _choice("distribution", self.distribution, GMP_DISTRIBUTIONS)
            if self.algo != "gmp":
                raise ConfigError(f"distribution spreads GMP's pruning over the layers and applies to algo 'gmp' only "
                                  f"(the other algorithms' layer densities follow density/epsilon); got algo "
                                  f"{self.algo!r}")
        if self.schedule_epochs is not None:
            self.schedule_epochs = _int("schedule_epochs", self.schedule_epochs, 1)
        if self.workers is not None:
            self.workers = _int("workers", self.workers, 1)
            if self.algo not in ("set", "static"):
                raise ConfigError(f"workers (WASAP-SGD) evolves the topology with SET or keeps it static; got algo "
                                  f"{self.algo!r}")
        if not isinstance(self.parallel, dict):
            raise ConfigError(f"parallel must be a table of WASAP-SGD settings, got {self.parallel!r}")
        if self.parallel and self.workers is None:
            raise ConfigError(f"parallel settings {sorted(self.parallel)} apply to WASAP-SGD runs only: set workers")
        _choice("transpose", self.transpose, TRANSPOSES)
        _choice("activation_storage", self.activation_storage, STORAGE)
        if self.eval_batch_size is not None:
            self.eval_batch_size = _int("eval_batch_size", self.eval_batch_size, 1)
        if not isinstance(self.importance_pruning, bool):
            raise ConfigError(f"importance_pruning must be true or false, got {self.importance_pruning!r}")
        if self.importance_pruning and self.algo not in ("static", "set", "rigl"):
            raise ConfigError(f"importance_pruning needs a model sparse from the start (algo static, set or rigl), "
                              f"got algo {self.algo!r}")
        if self.importance_pruning and len(self.hidden) < 1:
            raise ConfigError("importance_pruning removes hidden neurons: give at least one hidden layer")
        self.ip_percentile = _float("ip_percentile", self.ip_percentile, 0.0, 100.0, high_open=True)
        self.ip_every = _int("ip_every", self.ip_every, 1)
        if self.ip_start is not None:
            self.ip_start = _int("ip_start", self.ip_start, 1)
        self._validate_nm()
        return self

    def _validate_nm(self) -> None:
        """N:M runs (``nm``, ``transposable``): the pattern's form; the layer widths are checked when the model is
        built (they depend on the data's features)."""
        if not isinstance(self.transposable, bool):
            raise ConfigError(f"transposable must be true or false, got {self.transposable!r}")
        from sparta.nn.nm import VECTORS

        if not isinstance(self.nm_vector, int) or isinstance(self.nm_vector, bool) or self.nm_vector not in VECTORS:
            raise ConfigError(f"nm_vector must be one of {', '.join(map(str, VECTORS))} (output rows per group "
                              f"sharing their N:M positions), got {self.nm_vector!r}")
        if self.nm is None:
            if self.transposable:
                raise ConfigError("transposable applies to N:M runs: give nm too (e.g. --nm 2:4 --transposable)")
            if self.nm_vector != 1:
                raise ConfigError("nm_vector applies to N:M runs: give nm too (e.g. --nm 2:32 --nm-vector 4)")
            return
        if self.transposable and self.nm_vector != 1:
            raise ConfigError("an N:M run is either transposable or vector-wise (nm_vector 4), not both")
        from sparta.nn.nm import parse_pattern

        try:
            n, m = parse_pattern(self.nm)
        except ValueError as e:
            raise ConfigError(f"nm: {e}") from None
        self.nm = f"{n}:{m}"
        if self.algo not in ("static", "set", "rigl"):
            raise ConfigError(f"nm trains N:M layers with algo static, set or rigl, got algo {self.algo!r}")
        if self.density is not None:
            raise ConfigError(f"nm fixes the density of the N:M layers ({n}/{m}); do not give density")
        for name, bad in (("workers", self.workers is not None), ("importance_pruning", self.importance_pruning),
                          ("activation_storage", self.activation_storage != "float32")):
            if bad:
                raise ConfigError(f"nm runs do not support {name} (got {getattr(self, name)!r})")

    @property
    def sparse(self) -> bool:
        """Whether the model is built from sparse layers from the start (not for ``dense``/``gmp``)."""
        return self.algo not in ("dense", "gmp")

    @property
    def planned_epochs(self) -> int:
        """The epochs RigL's and GMP's schedules are fractions of (``schedule_epochs``, else ``epochs``)."""
        return self.schedule_epochs if self.schedule_epochs is not None else self.epochs

    def dense_baseline(self) -> RunConfig:
        """The same run with every layer dense (``algo="dense"``, one process), for the side-by-side comparison."""
        return dataclasses.replace(self, algo="dense", compare_dense=False, distribution=None, schedule_epochs=None,
                                   workers=None, parallel={}, importance_pruning=False, activation_storage="float32",
                                   nm=None, transposable=False, nm_vector=1)

    @property
    def algo_label(self) -> str:
        """How tables name the run's algorithm: ``algo``, or for N:M runs e.g. ``"set N:M 2:4 T"`` (``T``:
        transposable; ``V4``: vector-wise)."""
        if self.nm is None:
            return self.algo
        return f"{self.algo} N:M {self.nm}{' T' if self.transposable else ''}{' V4' if self.nm_vector == 4 else ''}"

    @property
    def ip_first_epoch(self) -> int:
        """Epochs after which Importance Pruning first runs (``ip_start``, or ``ip_every``)."""
        return self.ip_start if self.ip_start is not None else self.ip_every


# ---------------------------------------------------------------- layering

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def apply(config: RunConfig, values: Mapping[str, Any], source: str = "settings") -> RunConfig:
    """A copy of ``config`` with ``values`` set (keys may use ``-`` for ``_``); unknown keys are an error.

    Setting ``density`` clears ``epsilon`` and the other way round, so a layer can switch between them.
    """
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(f"unknown setting {key!r} in {source}; known settings: {', '.join(sorted(FIELDS))}")
        changes[name] = value
    if "density" in changes and "epsilon" not in changes and changes["density"] is not None:
        changes["epsilon"] = None
    if "epsilon" in changes and "density" not in changes and changes["epsilon"] is not None:
        changes["density"] = None
    if "data_options" in changes and isinstance(changes["data_options"], Mapping):
        changes["data_options"] = {**config.data_options, **changes["data_options"]}
    return dataclasses.replace(config, **changes)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file (``.toml``; read with :mod:`tomllib`) or YAML (``.yaml``/``.yml``; needs PyYAML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{p}: YAML config files need PyYAML (pip install pyyaml); or use TOML") from None
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from None
    elif suffix == ".json":
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise ConfigError("reading TOML on Python 3.10 needs tomli (pip install tomli)") from None
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p} is not valid TOML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p} must hold a table of settings, got {type(raw).__name__}")
    return raw


def resolve(preset: str | None = None, config_file: str | Path | None = None,
            overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults ← preset ← config file ← ``overrides`` (flags), validated.

    A config file may name a ``preset`` itself; an explicit ``preset`` argument wins over it.
    """
    file_values = read_config_file(config_file) if config_file is not None else {}
    name = preset if preset is not None else file_values.get("preset")
    config = RunConfig()
    if name is not None:
        config = apply(config, preset_settings(name), f"preset {name!r}")
        config = dataclasses.replace(config, preset=name)
    if file_values:
        config = apply(config, {k: v for k, v in file_values.items() if k != "preset"}, str(config_file))
    if overrides:
        config = apply(config, overrides, "command-line flags")
    return config.validate()


# -------------------------------------------------------------- validators


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int ≥ {minimum}"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _float(name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        hi_s = "inf" if math.isinf(high) else f"{high:g}"
        raise ConfigError(f"{name} must be a number in {lo}{low:g}, {hi_s}{hi}, got {value!r}")
    return float(value)
