"""Child process for dbos_peer.resume_after_kill_s.

``crash`` mode: start a 3-step workflow whose step 2 sleeps until killed.
``recover`` mode: launch DBOS on the same database so it recovers the pending
workflow; step 2 prints ``RESUMED <time.time()>`` the moment it re-runs.
"""

from __future__ import annotations

import sys
import time

MODE = sys.argv[1]
DB_PATH = sys.argv[2]
WF_ID = "bench-resume-wf"

from dbos import DBOS, SetWorkflowID  # noqa: E402  (import time is part of what we measure)

_step1_runs = 0


def _say(msg: str) -> None:
    print(msg, flush=True)


@DBOS.step()
def step1() -> dict[str, int]:
    global _step1_runs
    _step1_runs += 1
    return {"s": 1}


@DBOS.step()
def step2() -> dict[str, int]:
    if MODE == "recover":
        _say(f"RESUMED {time.time():.6f}")
        return {"s": 2}
    _say(f"STEP2_BEGIN {time.time():.6f}")
    # Bounded so an orphaned child cannot live forever if the parent dies.
    time.sleep(120)
    return {"s": 2}


@DBOS.step()
def step3() -> dict[str, int]:
    return {"s": 3}


@DBOS.workflow()
def resume_wf() -> int:
    step1()
    step2()
    step3()
    return 3


def main() -> None:
    DBOS(
        config={
            "name": "ironflow-bench-resume",
            "system_database_url": f"sqlite:///{DB_PATH}",
            "log_level": "WARNING",
            # Pinned because recovery only picks up workflows of the same
            # application version, and the default is a hash of the source.
            "application_version": "bench-resume-1",
        }
    )
    DBOS.launch()
    try:
        if MODE == "crash":
            with SetWorkflowID(WF_ID):
                resume_wf()
        else:
            DBOS.retrieve_workflow(WF_ID).get_result()
            _say(f"DONE step1_reran={_step1_runs}")
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
