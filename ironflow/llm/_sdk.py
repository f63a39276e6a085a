"""What the two SDK adapters share."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["split_params"]


def split_params(
    method: Callable[..., Any], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` split into the keywords ``method`` declares and the rest.

    SDK releases add and drop keyword arguments (and refuse unknown ones), while an API
    accepts more fields than a given release names; the rest go in ``extra_body``, so a
    parameter is never refused by the client for being newer or older than it.
    """
    try:
        accepted = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return dict(params), {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return dict(params), {}
    known = {k: v for k, v in params.items() if k in accepted}
    extra = {k: v for k, v in params.items() if k not in accepted}
    return known, extra
