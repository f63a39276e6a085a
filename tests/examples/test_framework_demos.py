"""The framework examples' demos: a process killed with kill -9 mid-run resumes."""

from __future__ import annotations

import pytest

from examples.langgraph_agent import demo as langgraph_demo
from examples.openai_agents_agent import demo as openai_agents_demo
from examples.pydantic_ai_agent import demo as pydantic_ai_demo

pytestmark = pytest.mark.process


def test_the_pydantic_ai_agent_survives_kill_9_between_model_requests() -> None:
    """make demo-pydantic-ai: only the tool in flight and the last request run again."""
    assert pydantic_ai_demo.main() == {"city": "Oslo", "fahrenheit": 53.6}


def test_the_openai_agents_workflow_survives_kill_9_between_model_requests() -> None:
    """make demo-openai-agents: handoff, tools and requests before the kill are not redone."""
    assert openai_agents_demo.main() == {"city": "Oslo", "fahrenheit": 53.6}


def test_the_langgraph_graph_resumes_from_its_ironflow_checkpoint_after_kill_9() -> None:
    """make demo-langgraph: completed nodes are not run again; the state is an uncrashed run's."""
    assert langgraph_demo.main() == {"city": "Oslo", "fahrenheit": 53.6}
