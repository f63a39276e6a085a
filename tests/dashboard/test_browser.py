"""The dashboard in a real browser: Debian's Chromium, driven by Playwright.

A real `ironflow serve` and a real worker process run the agents of
``tests/dashboard/agents.py``; each test acts as a person would, by clicking, and
checks what the page shows and what the store holds afterwards.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow.store import RemoteStore, Run
from tests.dashboard.conftest import keep_screenshot
from tests.server.conftest import Served, get_json, wait_until

pytestmark = pytest.mark.process

TOKEN = "dashboard-test-token"
WAIT_MS = 30_000  # generous: a loaded machine is slow, and a passing test never waits it out


def status_is(store: RemoteStore, run_id: str, *statuses: str) -> Run | None:
    run = store.get_run(run_id)
    return run if run.status in statuses else None


def open_page(browser: Any, url: str) -> Any:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    page.js_errors = errors
    return page


def confirm(page: Any, reason: str | None = None) -> None:
    """Answer the confirmation dialog the last click opened."""
    page.wait_for_selector("dialog#confirm[open]", timeout=WAIT_MS)
    if reason is not None:
        page.fill("#confirm-reason", reason)
    page.click("#confirm-ok")


@pytest.fixture(scope="module")
def remote(stack: Served) -> Iterator[RemoteStore]:
    store = RemoteStore(stack.url)
    yield store
    store.close()


def test_the_runs_list_shows_a_run_go_from_running_to_completed_live(
    browser: Any, stack: Served, remote: RemoteStore, tmp_path: Path
) -> None:
    """Open the runs list; a running run's status and step count change without a reload."""
    gate = tmp_path / "gate"
    run_id = remote.emit("dash.steps", {"n": 4, "gate": str(gate)}).run_ids[0]
    wait_until(lambda: status_is(remote, run_id, "running"), what="the run to start")
    page = open_page(browser, stack.url + "/")
    row = f'tr[data-run-id="{run_id}"]'
    page.wait_for_selector(f'{row}[data-status="running"]', timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = true")
    gate.touch()
    page.wait_for_selector(f'{row}[data-status="completed"]', timeout=WAIT_MS)
    assert page.inner_text(f"{row} td.steps") == "4"
    assert page.evaluate("window.__sameDocument") is True  # updated live, not reloaded
    keep_screenshot(page, "dashboard-runs.png", tmp_path)
    assert page.js_errors == []
    page.close()


def test_open_a_run_from_the_list_and_read_a_steps_output(
    browser: Any, stack: Served, remote: RemoteStore, tmp_path: Path
) -> None:
    """Click a run in the list, then a step in its timeline: its output is on the page."""
    run_id = remote.emit("dash.steps", {"n": 5}).run_ids[0]
    wait_until(lambda: status_is(remote, run_id, "completed"), what="the run to finish")
    page = open_page(browser, stack.url + "/#/runs")
    page.click(f'tr[data-run-id="{run_id}"] a')
    page.wait_for_selector("#timeline")
    assert page.inner_text("#run-id") == run_id
    assert page.locator("#timeline .step-row:not(.head)").count() == 5
    page.click('[data-step-id="tool.step#3"]')
    output = page.inner_text(".step-detail .output")
    assert '"square": 4' in output and '"step": 2' in output
    assert "executed" in page.inner_text('[data-step-id="tool.step#3"]')
    worker = remote.get_steps(run_id)[2].worker  # the engine stamps who executed it
    assert worker and f"worker {worker}" in page.inner_text(".step-detail")
    assert page.inner_text('[data-step-id="tool.step#3"] .worker') == worker
    keep_screenshot(page, "dashboard-run.png", tmp_path)
    assert page.js_errors == []
    page.close()


def test_approve_a_waiting_run_with_a_reason(
    browser: Any, stack: Served, remote: RemoteStore
) -> None:
    """The approval form answers ctx.approve as `ironflow approve` does, and the run goes on."""
    run_id = remote.emit("dash.approve", {"order": "o-1"}).run_ids[0]
    wait_until(lambda: status_is(remote, run_id, "waiting"), what="the run to wait")
    page = open_page(browser, f"{stack.url}/#/runs/{run_id}")
    assert "agent.approve.ship" in page.inner_text("#suspension")
    page.fill("#approver", "qa-lead")
    page.click("#approve")
    confirm(page, reason="checked by hand")
    page.wait_for_selector('#run-status [data-status="completed"]', timeout=WAIT_MS)
    run = remote.get_run(run_id)
    assert run.output == {"approved": True, "reason": "checked by hand"}
    answer = [e for e in remote.events(limit=10_000) if e.name == "agent.approve.ship"][-1]
    assert answer.data == {
        "run_id": run_id,
        "approved": True,
        "approver": "qa-lead",
        "reason": "checked by hand",
    }
    page.close()


def test_cancel_a_sleeping_run(browser: Any, stack: Served, remote: RemoteStore) -> None:
    """A sleeping run shows its wake time; Cancel, confirmed, cancels it at once."""
    run_id = remote.emit("dash.sleep", {}).run_ids[0]
    wait_until(lambda: status_is(remote, run_id, "sleeping"), what="the run to sleep")
    page = open_page(browser, f"{stack.url}/#/runs/{run_id}")
    assert page.inner_text("#suspension .wake")  # the wake-up time is shown
    page.click("#cancel")
    confirm(page)
    page.wait_for_selector('#run-status [data-status="cancelled"]', timeout=WAIT_MS)
    assert remote.get_run(run_id).status == "cancelled"
    page.close()


def test_rerun_a_finished_run_from_a_step(
    browser: Any, stack: Served, remote: RemoteStore
) -> None:
    """Re-run from a step keeps the records before it and lists the re-run."""
    run_id = remote.emit("dash.steps", {"n": 3}).run_ids[0]
    first = wait_until(lambda: status_is(remote, run_id, "completed"), what="the run to finish")
    page = open_page(browser, f"{stack.url}/#/runs/{run_id}")
    page.click('[data-step-id="tool.step#2"]')
    page.click(".step-detail button.rerun")
    confirm(page)
    page.wait_for_selector("#reruns", timeout=WAIT_MS)
    run = wait_until(lambda: status_is(remote, run_id, "completed"), what="the re-run to finish")
    assert [r.from_step for r in run.reruns] == ["tool.step#2"]
    assert run.attempt > first.attempt
    steps = remote.get_steps(run_id)
    assert steps[0].attempt == first.attempt  # kept from the first execution
    page.wait_for_selector('#run-status [data-status="completed"]', timeout=WAIT_MS)
    assert "replayed" in page.inner_text('[data-step-id="tool.step"]')
    page.close()


def test_a_run_page_shows_llm_calls_children_compensations_and_retries(
    browser: Any, stack: Served, remote: RemoteStore, tmp_path: Path
) -> None:
    """An LLM step's messages, reply, tool calls and tokens; parent and child linked both
    ways; a saga's compensation and the user's frame of its error; a retried try."""
    ask = remote.emit("dash.ask", {"question": "Weather in Paris?"}).run_ids[0]
    parent = remote.emit("dash.parent", {}).run_ids[0]
    checkout = remote.emit("dash.checkout", {"amount": 42, "order": "o-9"}).run_ids[0]
    retry = remote.emit("dash.retry", {"marker": str(tmp_path / "tried")}).run_ids[0]
    for run_id in (ask, parent, checkout, retry):
        wait_until(lambda r=run_id: status_is(remote, r, "completed", "failed"), what=run_id)

    page = open_page(browser, f"{stack.url}/#/runs/{ask}")
    page.click('[data-step-id="llm.answer"]')
    llm = page.inner_text(".step-detail .llm")
    assert "Weather in Paris?" in llm and "lookup" in llm
    assert "It is sunny in Paris, 21 degrees." in llm and "Tokens: " in llm

    page.goto(f"{stack.url}/#/runs/{parent}")
    page.wait_for_selector("#children a", timeout=WAIT_MS)
    child = page.inner_text("#children a")
    page.click("#children a")
    page.wait_for_selector(f'#run-id:has-text("{child}")', timeout=WAIT_MS)
    assert page.inner_text("#parent a") == parent

    page.goto(f"{stack.url}/#/runs/{checkout}")
    page.wait_for_selector("#compensations", timeout=WAIT_MS)
    assert "compensate.tool.charge" in page.inner_text("#compensations")
    frame = page.inner_text("#run-error .frame")
    assert "tests/dashboard/agents.py" in frame and "in ship" in frame

    page.goto(f"{stack.url}/#/runs/{retry}")
    page.wait_for_selector('[data-step-id="tool.flaky"]', timeout=WAIT_MS)
    page.click('[data-step-id="tool.flaky"]')
    detail = page.inner_text(".step-detail")
    assert "1 failed try before this outcome" in detail and "the service hung up" in detail
    assert page.js_errors == []
    page.close()


def test_pause_and_resume_a_run(browser: Any, stack: Served, remote: RemoteStore) -> None:
    """Pause and Resume, each confirmed, do what `ironflow run pause/resume` do."""
    from ironflow.store import AgentSpec

    remote.register_agents([AgentSpec("unserved", ("dash.unserved",))])
    run_id = remote.emit("dash.unserved", {}).run_ids[0]  # no worker serves it: pending
    page = open_page(browser, f"{stack.url}/#/runs/{run_id}")
    page.click("#pause")
    confirm(page)
    page.wait_for_selector('#run-status [data-status="paused"]', timeout=WAIT_MS)
    assert remote.get_run(run_id).status == "paused"
    page.click("#resume")
    confirm(page)
    page.wait_for_selector('#run-status [data-status="pending"]', timeout=WAIT_MS)
    assert remote.get_run(run_id).status == "pending"
    page.close()


# -- without --dev ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`ironflow serve --token ...`: the dashboard behind its login page."""
    served = Served(tmp_path_factory.mktemp("guarded") / "data", args=("--token", TOKEN))
    try:
        served.start()
        wait_until(lambda: get_json(served.url + "/api/v1/health", TOKEN)["status"] == "ok")
        yield served
    finally:
        if served.child is not None:
            served.kill()


def test_log_in_with_the_token(browser: Any, guarded: Served) -> None:
    """The login page refuses a wrong token and takes the right one into a strict cookie."""
    browser.clear_cookies()
    page = browser.new_page()
    page.goto(guarded.url + "/")
    assert page.url.endswith("/ui/login")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    assert "not this server" in page.inner_text("body")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready='1'] #runs-table", timeout=WAIT_MS)
    (cookie,) = [c for c in browser.cookies() if c["name"] == "ironflow_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # out of the page's scripts' reach
    page.close()


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Serves one page that, once loaded, posts a cancel to the dashboard's origin."""

    target = ""

    def do_GET(self) -> None:
        html = (
            "<!doctype html><form id=f method=post enctype=text/plain "
            f'action="{self.target}"><input name=\'{{"x":"\' value=\'1"}}\'></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def log_message(self, *args: Any) -> None:
        pass


def test_fail_to_act_without_the_token(browser: Any, guarded: Served) -> None:
    """Signed out, an action is refused; signed in, a page of another origin cannot act."""
    store = RemoteStore(guarded.url, token=TOKEN)
    try:
        from ironflow.store import AgentSpec

        store.register_agents([AgentSpec("held", ("dash.held",))])
        run_id = store.emit("dash.held", {}).run_ids[0]
        cancel = f"{guarded.url}/ui/api/runs/{run_id}/cancel"
        browser.clear_cookies()
        page = browser.new_page()
        page.goto(guarded.url + "/ui/login")
        status = page.evaluate(
            """async (url) => (await fetch(url, {method: "POST", body: "{}",
                 headers: {"Content-Type": "application/json"}})).status""",
            cancel,
        )
        assert status == 401
        # Signed in now; a page on another port of this host posts the classic forged form.
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
        _Attacker.target = cancel
        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
        thread = threading.Thread(target=evil.serve_forever, daemon=True)
        thread.start()
        try:
            attack = browser.new_page()
            with attack.expect_navigation(timeout=WAIT_MS):
                attack.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
            assert "csrf" in attack.inner_text("body")
            attack.close()
        finally:
            evil.shutdown()
            evil.server_close()
            thread.join(timeout=30)
        time.sleep(0.2)
        assert store.get_run(run_id).status == "pending"  # nothing was cancelled
        page.close()
    finally:
        store.close()


def test_emit_from_the_events_page_and_see_why_an_event_started_nothing(
    browser: Any, stack: Served, remote: RemoteStore
) -> None:
    """The emit form starts a run like `ironflow emit`; an unheard event says why; the
    agents and memory pages list what is registered."""
    page = open_page(browser, stack.url + "/#/events")
    page.fill("#emit-name", "dash.steps")
    page.fill("#emit-data", '{"n": 2}')
    page.click("#emit-form button[type=submit]")
    confirm(page)
    page.wait_for_selector("#emit-result a", timeout=WAIT_MS)
    run_id = page.inner_text("#emit-result a")
    assert remote.get_run(run_id).agent == "steps"
    page.fill("#emit-name", "nobody.listens")
    page.fill("#emit-data", "{}")
    page.click("#emit-form button[type=submit]")
    confirm(page)
    why = page.wait_for_selector('#events-body .why:has-text("nobody.listens")', timeout=WAIT_MS)
    assert why.inner_text().startswith("no agent is triggered by 'nobody.listens'; the ")
    page.goto(stack.url + "/#/agents")
    page.wait_for_selector('#agents-body tr[data-agent="gatekeeper"]', timeout=WAIT_MS)
    page.goto(stack.url + "/#/memory")
    page.wait_for_selector("#projections-body", timeout=WAIT_MS)
    assert page.js_errors == []
    page.close()
