"""The tools: read a pull request's diff, comment on it, merge it. All offline stand-ins."""

from __future__ import annotations

from ironflow import tool

#: The pull requests this example knows, in place of a code host's API.
DIFFS: dict[int, str] = {
    42: (
        "--- a/api/users.py\n+++ b/api/users.py\n"
        "+def delete_user(user_id):\n"
        "+    # TODO: check the caller may delete users\n"
        '+    db.execute(f"DELETE FROM users WHERE id = {user_id}")\n'
    ),
    43: ("--- a/README.md\n+++ b/README.md\n+## Install\n+pip install acme-api\n"),
}


@tool(description="Fetch a pull request's diff", retries=3, backoff="1s", timeout="30s")
def fetch_diff(repo: str, number: int) -> dict[str, str]:
    print(f"[fetch_diff] {repo}#{number}", flush=True)
    return {"repo": repo, "number": str(number), "diff": DIFFS.get(number, "")}


@tool(description="Comment on a pull request")
def post_comment(repo: str, number: int, body: str) -> dict[str, bool]:
    first_line = body.splitlines()[0] if body else ""
    print(f"[post_comment] {repo}#{number}: {first_line}", flush=True)
    return {"posted": True}


@tool(description="Merge a pull request")
def merge(repo: str, number: int) -> dict[str, bool]:
    print(f"[merge] {repo}#{number} merged", flush=True)
    return {"merged": True}
