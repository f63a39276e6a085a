"""The framework examples' demos: a worker killed with kill -9 between model requests resumes."""

from __future__ import annotations

import pytest

from examples.openai_agents_agent import demo as openai_agents_demo
from examples.pydantic_ai_agent import demo as pydantic_ai_demo

pytestmark = pytest.mark.process


def test_the_pydantic_ai_agent_survives_kill_9_between_model_requests() -> None:
    """make demo-pydantic-ai: only the tool in flight and the last request run again."""
    assert pydantic_ai_demo.main() == {"city": "Oslo", "fahrenheit": 53.6}


def test_the_openai_agents_workflow_survives_kill_9_between_model_requests() -> None:
    """make demo-openai-agents: handoff, tools and requests before the kill are not redone."""
    assert openai_agents_demo.main() == {"city": "Oslo", "fahrenheit": 53.6}
