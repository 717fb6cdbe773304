"""Role factories for the purchase parties, one module per kind; each registers itself with
``setmail.agent.factory.register_role``.  ``load_all`` imports every module of this package, so a
new kind is added by adding a module."""
from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
