"""Worker entrypoint: ``python -m ironflow.run worker examples.code_review.worker``."""

from examples.code_review.agent import code_review

__all__ = ["code_review"]
