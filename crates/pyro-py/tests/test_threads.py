"""Calls release the GIL: Python threads drive several workspaces at once.

One workload (create a workspace, a few execs that take wall time but little CPU, delete) is
timed alone, then four threads each run it on their own workspace at the same time, sharing
one ``Pyro``. If the GIL were held while a call waits on its VM, the four would run one after
the other (~4x); the assertion asks for well under that.
"""

from __future__ import annotations

import threading
import time

SLEEPS = 3
SLEEP_SECONDS = 1


def workload(pyro, tag: str) -> dict:
    """Create, exec ``sleep`` a few times, delete; what the guest said and how long it took."""
    began = time.monotonic()
    w = pyro.create_workspace(environment="debian:12", name=f"thread-{tag}")
    wid = w["workspace_id"]
    outs = []
    try:
        for i in range(SLEEPS):
            r = pyro.exec_workspace(wid, command=f"sleep {SLEEP_SECONDS}; echo {tag}-{i}")
            assert r["exit_code"] == 0, r
            outs.append(r["stdout"])
    finally:
        d = pyro.delete_workspace(wid)
    assert d["deleted"] is True
    return {"id": wid, "outs": outs, "seconds": time.monotonic() - began}


class Ticker(threading.Thread):
    """Counts 10 ms ticks: it only advances while no other thread holds the GIL."""

    def __init__(self):
        super().__init__(daemon=True)
        self.ticks = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.ticks += 1
            time.sleep(0.01)


def test_four_threads_run_concurrently(pyro):
    # One thread alone, with a ticker proving Python keeps running during the calls.
    ticker = Ticker()
    ticker.start()
    single = workload(pyro, "solo")
    ticker.stop.set()
    ticker.join()
    assert single["outs"] == [f"solo-{i}\n" for i in range(SLEEPS)]
    # At 10 ms a tick, a ticker starved by a GIL-holding call would count almost nothing
    # while the execs sleep; half the ideal count is plenty of margin for a busy host.
    assert ticker.ticks >= single["seconds"] * 100 * 0.5, (ticker.ticks, single["seconds"])

    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def run(tag):
        try:
            results[tag] = workload(pyro, tag)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    tags = ["t0", "t1", "t2", "t3"]
    threads = [threading.Thread(target=run, args=(t,)) for t in tags]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    total = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    for tag in tags:
        assert results[tag]["outs"] == [f"{tag}-{i}\n" for i in range(SLEEPS)]
    assert len({r["id"] for r in results.values()}) == 4
    print(f"single {single['seconds']:.1f}s, four threads {total:.1f}s ({total / single['seconds']:.2f}x)")
    assert total < 2.5 * single["seconds"], (total, single["seconds"])
    assert pyro.list_workspaces()["count"] == 0
