"""Importing the user's module that defines agents: by dotted name or by file path."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from ironflow.errors import ConfigError

__all__ = ["load_module"]


def load_module(target: str) -> ModuleType:
    """Import ``target`` (``pkg.module`` or ``path/to/file.py``) the way ``python`` would.

    The current directory goes on ``sys.path`` first, as with ``python -m``. A module
    that fails to import raises :class:`ConfigError` naming the module, the exception
    and the line it came from, instead of a traceback.
    """
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise ConfigError(f"worker module {target!r}: no such file")
            sys.path.insert(0, str(path.resolve().parent))
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"worker module {target!r} cannot be loaded as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise ConfigError(
                f"worker module {target!r} not found; give a dotted module name importable from "
                "the current directory, or a path to a .py file"
            ) from None
        raise ConfigError(f"worker module {target!r} failed to import: {exc}") from None
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        raise ConfigError(
            f"worker module {target!r} failed to import: {type(exc).__name__}: {exc}{where}"
        ) from None
