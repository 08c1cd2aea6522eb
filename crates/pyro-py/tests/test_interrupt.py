"""Ctrl-C during a long exec: the Python program gets KeyboardInterrupt promptly, and the
command it started is gone from the guest (the SDK future is dropped, which cancels the guest
work, as in the Rust SDK).

The workspace is created here; a separate interpreter (sharing the state dir) runs
``exec_workspace(id, command="sleep 300")`` and receives SIGINT while it waits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from support import cache_dir, subprocess_env

CHILD = textwrap.dedent(
    """
    import sys, time
    from pyro_sdk import Pyro

    pyro = Pyro(base_dir=sys.argv[1], cache_dir=sys.argv[3] or None)
    print("calling", flush=True)
    began = time.monotonic()
    try:
        r = pyro.exec_workspace(sys.argv[2], command="sleep 300", timeout_seconds=600)
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - began:.2f}s", flush=True)
        sys.exit(42)
    print(f"returned {r!r}", flush=True)
    sys.exit(1)
    """
)


def guest_lines(pyro, wid, needle):
    """Lines of the guest's process list containing ``needle``; the listing must show the
    agent, so a broken ``ps`` can never read as "no such process"."""
    ps = pyro.exec_workspace(wid, command="ps -eo args")
    assert ps["exit_code"] == 0, ps
    assert "pyro-agent" in ps["stdout"], ps["stdout"]
    return [line for line in ps["stdout"].splitlines() if needle in line]


def test_ctrl_c_cancels_a_long_exec(pyro, home):
    wid = pyro.create_workspace(environment="debian:12")["workspace_id"]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, home.path, wid, cache_dir() or ""],
        env=subprocess_env(home.path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "calling"
        # Wait until the command really runs in the guest.
        deadline = time.monotonic() + 60
        while not guest_lines(pyro, wid, "sleep 300"):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "sleep 300 never started in the guest"
            time.sleep(0.5)

        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 42, (child.returncode, out, err)
    assert "interrupted after" in out, out
    assert "PanicException" not in err and "panicked" not in err, err
    print(f"KeyboardInterrupt {took:.2f}s after SIGINT; child said: {out.strip()}")
    assert took < 5, f"KeyboardInterrupt took {took:.1f}s"

    # The guest process is gone (give the cancellation a moment to reach the guest).
    deadline = time.monotonic() + 10
    left = guest_lines(pyro, wid, "sleep 300")
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = guest_lines(pyro, wid, "sleep 300")
    assert left == [], left
    # The workspace is still usable.
    r = pyro.exec_workspace(wid, command="echo still-here")
    assert (r["exit_code"], r["stdout"]) == (0, "still-here\n")
    assert pyro.delete_workspace(wid)["deleted"] is True
