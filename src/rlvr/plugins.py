"""Importing a user's plugin (a module name or a .py file) so that its components register themselves.

Kept free of heavy imports: reward worker processes import plugins too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["import_plugin"]


def import_plugin(name: str) -> None:
    """Import ``name``: a module on ``sys.path`` (the current directory included) or a ``.py`` file.

    A file is executed (again, if it was imported before) under its stem as module name, so that its
    components register themselves anew. Raises FileNotFoundError for a missing file and
    ModuleNotFoundError for a missing module.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"plugin file {path} does not exist")
    spec = importlib.util.spec_from_file_location(path.stem, path.resolve())
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
