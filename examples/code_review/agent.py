"""The code-review agent: ctx.llm reviews the diff, ctx.approve gates the merge.

Offline by default: a ScriptedProvider answers the model call from the diff itself,
so the example needs no key and no network. To ask a real model instead, pass
``provider=ironflow.llm.OpenAIProvider()`` (``pip install 'ironflow[openai]'``).
"""

from __future__ import annotations

from typing import Any

from examples.code_review.tools import fetch_diff, merge, post_comment
from ironflow import AgentContext, agent
from ironflow.llm import LlmRequest, Message, ScriptedProvider

SYSTEM = "You review pull requests. List concrete problems, one per line, then a verdict."


def _offline_review(request: LlmRequest) -> str:
    """A deterministic reviewer: flags what a careful human would, from the diff text."""
    diff = request.messages[-1].content or ""
    problems = []
    if "TODO" in diff:
        problems.append("- A TODO is left in new code: finish it or file an issue.")
    if 'f"DELETE' in diff or 'f"SELECT' in diff:
        problems.append("- SQL built with an f-string: use a parameterized query.")
    verdict = "Verdict: changes requested." if problems else "Verdict: looks good."
    return "\n".join([*problems, verdict]) if problems else "No problems found.\n" + verdict


PROVIDER = ScriptedProvider(_offline_review)


@agent(id="code-review", triggers=["pr.opened"], timeout="7d")
def code_review(ctx: AgentContext) -> dict[str, Any]:
    pr = ctx.event.data
    repo, number = pr["repo"], int(pr["number"])
    diff = fetch_diff(repo=repo, number=number)["diff"]

    # The model call is the recorded step llm.review: after a crash it is replayed
    # from the record, never paid for twice.
    review = ctx.llm(
        model="reviewer",
        name="review",
        messages=[Message.system(SYSTEM), Message.user(diff)],
        provider=PROVIDER,
    )
    post_comment(repo=repo, number=number, body=review.text)

    # The run now waits, suspended in the store, holding no worker: for days if need be.
    decision = ctx.approve(
        "merge", {"repo": repo, "number": number, "review": review.text}, ttl="3d"
    )
    if decision.approved:
        merge(repo=repo, number=number)
    else:
        why = "no answer within 3 days" if decision.timed_out else decision.reason or "rejected"
        post_comment(repo=repo, number=number, body=f"Not merged: {why}")
    return {
        "repo": repo,
        "number": number,
        "review": review.text,
        "merged": decision.approved,
        "approver": decision.approver,
        "reason": decision.reason,
    }
