"""Importing a user's plugin (a module name or a .py file) so that its components register themselves.

Kept free of heavy imports: reward worker processes import plugins too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["exec_file", "import_plugin"]


def exec_file(path: Path, name: str) -> ModuleType:
    """Execute the Python file ``path`` as module ``name`` (registered in ``sys.modules`` first, so
    that it can import itself; removed again if it raises) and return the module."""
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


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
    exec_file(path, path.stem)
