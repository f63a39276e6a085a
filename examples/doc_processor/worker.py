"""Worker entrypoint: ``python -m ironflow.run worker examples.doc_processor.worker``."""

from examples.doc_processor.agent import doc_processor
from examples.doc_processor.memory import doc_memory

__all__ = ["doc_memory", "doc_processor"]
