"""The three examples crash-tested at every boundary, through the pytest plugin's fixtures."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from examples.code_review.agent import code_review
from examples.doc_processor import tools as doc_tools
from examples.doc_processor.agent import doc_processor
from examples.doc_processor.memory import doc_memory
from examples.research.agent import research
from ironflow.store import Store
from ironflow.testing import CrashReport, Driver

DOC = {"docId": "doc-7", "imageUrl": "https://example.com/invoice.png"}


@pytest.fixture
def quick_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's OCR sleeps 3 s: the window to kill -9 a worker by hand. A crash matrix
    needs no window, so the tools' module gets a time that does not wait."""
    monkeypatch.setattr(doc_tools, "time", types.SimpleNamespace(sleep=lambda seconds: None))


@pytest.mark.usefixtures("quick_ocr")
def test_doc_processor_runs_and_remembers(ironflow_worker: Driver, ironflow_store: Store) -> None:
    run = ironflow_worker.run(doc_processor, DOC, projections=[doc_memory])
    assert run.status == "completed" and run.output == {"docId": "doc-7", "category": "invoice"}
    memory = ironflow_store.get_projection("doc-processor-memory").state
    assert memory["doc-7"]["status"] == "published"


@pytest.mark.usefixtures("quick_ocr")
def test_doc_processor_survives_a_crash_at_every_boundary(
    ironflow_crash_matrix: Callable[..., CrashReport],
) -> None:
    report = ironflow_crash_matrix(doc_processor, DOC, projections=[doc_memory])
    described = [c.boundary.describe() for c in report.cases]
    assert "inside memory.append: event appended, step not recorded" in described
    assert "before tool.ocr is recorded" in described and len(report.cases) >= 12


def test_code_review_survives_a_crash_at_every_boundary(
    ironflow_crash_matrix: Callable[..., CrashReport],
) -> None:
    """Approved by the callback; the model's review is never asked for twice but in flight."""
    answers: list[tuple[str, Any]] = []

    def approve(name: str, payload: Any) -> bool:
        answers.append((name, payload))
        return True

    report = ironflow_crash_matrix(code_review, {"repo": "acme/api", "number": 42}, approve=approve)
    assert report.output["merged"] is True and report.output["approver"] == "ironflow.testing"
    assert answers and answers[0][0] == "merge" and answers[0][1]["number"] == 42
    assert "before approve.merge suspends the run" in [c.boundary.describe() for c in report.cases]


def test_code_review_rejected_in_the_worker_fixture(ironflow_worker: Driver) -> None:
    run = ironflow_worker.run(
        code_review, {"repo": "acme/api", "number": 43}, approve=lambda name, payload: False
    )
    assert run.output["merged"] is False and run.output["reason"] is None


def test_research_survives_a_crash_at_every_boundary(
    ironflow_crash_matrix: Callable[..., CrashReport],
) -> None:
    report = ironflow_crash_matrix(research, {"topic": "durable execution"})
    assert report.output["summary"].startswith("3 sources agree")
    assert "before tool.search#3 is recorded" in [c.boundary.describe() for c in report.cases]
