"""Worker entrypoint: ``python -m ironflow.run worker examples.doc_processor.worker``."""

from examples.doc_processor.agent import doc_processor

__all__ = ["doc_processor"]
