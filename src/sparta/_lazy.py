"""Lazy package attributes (PEP 562), so that ``import sparta`` and the ``sparta`` command's ``--help`` do not
import torch, numba or matplotlib until something needs them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose attribute ``name`` lives in module ``exports[name]`` (written
    ``"module:attribute"`` when it has another name there), imported from it on first use; an attribute that names
    a sub-package (``exports["nn"] == "sparta.nn"``) is that sub-package."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = exports[name].partition(":")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
