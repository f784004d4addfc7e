"""Lease owners: a dead process of this host is recognised, anything else is left alone."""

from __future__ import annotations

import subprocess
import sys

from services.aggregator import lease_owner


def test_this_process_is_alive_and_a_killed_child_is_dead() -> None:
    me = lease_owner.current()
    assert not lease_owner.is_dead_here(str(me))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = lease_owner._start_time(child.pid)
        assert started is not None
        owner = str(lease_owner.ProcessIdentity(me.host, child.pid, me.boot_id, started))
        assert lease_owner.parse(owner) == lease_owner.ProcessIdentity(
            me.host, child.pid, me.boot_id, started
        )
        assert not lease_owner.is_dead_here(owner)  # still running
    finally:
        child.kill()
        child.wait()
    assert lease_owner.is_dead_here(owner)


def test_a_reused_pid_with_another_start_time_is_dead() -> None:
    me = lease_owner.current()
    reused = lease_owner.ProcessIdentity(me.host, me.pid, me.boot_id, "1")  # pid reused
    assert lease_owner.is_dead_here(str(reused))


def test_other_hosts_other_boots_and_garbage_are_never_taken_over() -> None:
    me = lease_owner.current()
    for owner in (
        f"elsewhere/999999/{me.boot_id}/1",
        f"{me.host}/999999/another-boot/1",
        "not an owner",
        None,
        "",
    ):
        assert not lease_owner.is_dead_here(owner), owner
