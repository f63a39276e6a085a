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
                raise ConfigError(f"worker module {target!r}: no such file{_close_file(path)}")
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
                f"worker module {target!r} not found{_close_module(target)}; give a dotted "
                "module name importable from the current directory, or a path to a .py file"
            ) from None
        # A package the module imports: most often one not installed in this Python (a
        # virtualenv not activated in this terminal).
        raise ConfigError(
            f"worker module {target!r} failed to import: {exc}{_where(exc)}; is it installed "
            f"for this Python ({sys.executable})?"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"worker module {target!r} failed to import: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from None


def _where(exc: BaseException) -> str:
    """`` (file:line)`` of the user's code that raised, not importlib's frozen frames (a
    SyntaxError names its own file and line already)."""
    if isinstance(exc, SyntaxError):
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _close_file(path: Path) -> str:
    """`` (did you mean 'dir/x.py'?)`` for a .py file one typo away."""
    import difflib

    folder = path.parent
    if not folder.is_dir():
        return ""
    names = [p.name for p in folder.glob("*.py")]
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
    return f" (did you mean {str(folder / close[0])!r}?)" if close else ""


def _close_module(target: str) -> str:
    """`` (did you mean 'x'?)`` for a top-level name one typo away from a module here."""
    import difflib

    if "." in target:
        return ""
    here = Path.cwd()
    names = [p.stem for p in here.glob("*.py")]
    names += [p.parent.name for p in here.glob("*/__init__.py")]
    close = difflib.get_close_matches(target, names, n=1, cutoff=0.75)
    return f" in {here} (did you mean {close[0]!r}?)" if close else f" in {here}"
