"""`python -m bench.saver_syscalls`: how a strace log is counted (no strace needed)."""

from __future__ import annotations

from pathlib import Path

from bench.saver_syscalls import _count

# Two threads: a futex and a recvfrom interrupted by the other's calls, a recvfrom that
# found nothing, and calls outside the markers.
_TRACE = """\
7  futex(0x1, FUTEX_WAKE_PRIVATE, 1) = 0
7  write(3, "@begin", 6) = 6
7  futex(0x2, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL <unfinished ...>
8  sendto(5, "Q", 40, MSG_NOSIGNAL, NULL, 0) = 40
8  recvfrom(5,  <unfinished ...>
7  <... futex resumed>) = 0
8  <... recvfrom resumed>"T", 16384, 0, NULL, NULL) = 120
8  recvfrom(5, 0x55, 16384, 0, NULL, NULL) = -1 EAGAIN (Resource temporarily unavailable)
8  recvfrom(5, "C", 16384, 0, NULL, NULL) = 12
7  write(3, "@end", 4) = 4
8  sendto(5, "Q", 40, MSG_NOSIGNAL, NULL, 0) = 40
"""


def test_each_call_counts_once_and_answers_are_receives_that_returned_data(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace"
    trace.write_text(_TRACE)
    calls = _count(str(trace))
    assert calls["futex"] == 1  # its two halves are one call
    assert calls["sendto"] == 1  # the one after the end marker is not counted
    assert calls["recvfrom"] == 3
    assert calls["(answers)"] == 2  # the resumed one and the last; EAGAIN waited for nothing
    assert calls["(all)"] == 5
