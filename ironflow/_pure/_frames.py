"""Where a failure happened in the user's code, read back from a stored traceback.

A step's or run's error is stored with its traceback as text (``ErrorInfo.traceback``),
so the worker log and ``ironflow inspect`` can point at the line that raised long after
the process that ran it is gone. The line worth showing is the user's innermost frame:
not Ironflow's own, nor the standard library's or an installed package's (an error
raised inside ``json.loads`` is shown where the user called it).

Why parse text instead of storing the frame: the stored format stays as it is, and
records written before this existed get the same treatment.
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path

import attrs

__all__ = ["Frame", "user_frame"]

_FRAME = re.compile(r'^  File "(?P<file>.+)", line (?P<line>\d+), in (?P<function>.+)$')
_HEADER = "Traceback (most recent call last):"
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs)


_LIBRARIES = _library_dirs()


@attrs.frozen
class Frame:
    """One frame of a traceback: file, line number, function, and the line of code."""

    file: str
    line: int
    function: str
    code: str

    def describe(self) -> str:
        """``my_agent.py:14 in classify: return text["x"]``, the path relative to here."""
        code = f": {self.code}" if self.code else ""
        return f"{_shown(self.file)}:{self.line} in {self.function}{code}"


def user_frame(traceback: str | None) -> Frame | None:
    """The innermost frame of the user's code in a formatted traceback, if any.

    Only the last exception of a chain is read (the one that was raised). Frames in
    Ironflow, the standard library and installed packages are skipped; if nothing
    else is left, the innermost frame outside Ironflow is returned instead.
    """
    if not traceback:
        return None
    frames = _frames(traceback.rsplit(_HEADER, 1)[-1])
    outside = [f for f in frames if not _under(f.file, (_PACKAGE,))]
    users = [f for f in outside if not _under(f.file, _LIBRARIES) and not f.file.startswith("<")]
    chosen = users or outside
    return chosen[-1] if chosen else None


def _frames(text: str) -> list[Frame]:
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _FRAME.match(line)
        if match is None:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        code = following.strip() if following.startswith("    ") else ""
        found.append(
            Frame(match["file"], int(match["line"]), match["function"], code)
        )
    return found


def _under(file: str, dirs: tuple[str, ...]) -> bool:
    try:
        resolved = str(Path(file).resolve())
    except (OSError, ValueError):
        resolved = file
    return resolved.startswith(dirs)


def _shown(file: str) -> str:
    """The path relative to the current directory when it is below it, else as given."""
    try:
        return str(Path(file).resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return file
