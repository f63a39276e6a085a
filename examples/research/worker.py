"""Worker entrypoint: ``python -m ironflow.run worker examples.research.worker``."""

from examples.research.agent import research

__all__ = ["research"]
