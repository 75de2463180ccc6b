"""A lock on a run directory, so two runs with the same ``run_name`` never mix.

Without it both runs write ``metrics.csv`` rows into one file and ``last.pt`` is whichever
wrote last. ``RunLock`` creates ``<run dir>/run.lock`` with ``O_EXCL`` (atomic on local
and NFSv3+ file systems) holding who owns it: host, pid, the pid's start time, SLURM job
id, and a heartbeat time that a daemon thread refreshes while the run lives.

A lock is *stale*, and taken over with a log line, when its owner cannot be running:

- same host, and the pid is gone, or now belongs to a later process (its start time
  differs), or is this very process without holding the lock (a container restarted);
- the same SLURM job id as ours: SLURM requeued the job, so the earlier incarnation was
  stopped before this one started (several runs inside one allocation must use different
  run names);
- any host, and the heartbeat is older than ``stale_after_s`` (a node that died on a
  shared file system; its clock is not trusted alone: the file's modification time,
  set by the file server, must be old too).

Otherwise a second run ends in one line naming the owner (``RunDirectoryLocked``, exit 2).
Under torchrun only rank 0 takes the lock (``train.py``).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import SettingError

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 20 missed heartbeats: a busy shared file system can stall writes for minutes
UNREADABLE_GRACE_S = 10.0  # a lock younger than this may be half-written by a live run

log = logging.getLogger(__name__)
_HELD_HERE: set[str] = set()  # tokens of the locks this process holds


class RunDirectoryLocked(SettingError):
    """Another live run owns the run directory; the message names it and what to do."""


def process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None elsewhere;
    with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def this_owner(token: str) -> dict[str, Any]:
    now = time.time()
    return {"token": token, "host": socket.gethostname(), "pid": os.getpid(),
            "pid_started": process_start_time(os.getpid()), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": now, "heartbeat": now}  # fmt: skip


def stale_reason(owner: dict[str, Any], mtime: float, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the lock's ``owner`` cannot be running any more, or None if it may be."""
    me = this_owner("")
    heartbeat = owner.get("heartbeat")
    age = time.time() - max(heartbeat if isinstance(heartbeat, (int, float)) else 0.0, mtime)
    if owner.get("token") in _HELD_HERE:
        return None
    if owner.get("host") == me["host"] and isinstance(owner.get("pid"), int):
        pid = owner["pid"]
        if pid == me["pid"]:
            return f"pid {pid} is this process, which does not hold it (restarted)"
        if not pid_alive(pid):
            return f"pid {pid} on {me['host']} is not running"
        started = process_start_time(pid)
        if owner.get("pid_started") and started and started != owner["pid_started"]:
            return f"pid {pid} on {me['host']} is another process now"
        return None
    if me["slurm_job_id"] and owner.get("slurm_job_id") == me["slurm_job_id"]:
        return f"SLURM job {me['slurm_job_id']} was requeued"
    if age > stale_after_s:
        return f"no heartbeat for {age:.0f} s (more than {stale_after_s:.0f} s)"
    return None


def describe(owner: dict[str, Any], mtime: float) -> str:
    heartbeat = owner.get("heartbeat")
    age = time.time() - max(heartbeat if isinstance(heartbeat, (int, float)) else 0.0, mtime)
    job = f", SLURM job {owner['slurm_job_id']}" if owner.get("slurm_job_id") else ""
    return f"host {owner.get('host')}, pid {owner.get('pid')}{job}, heartbeat {age:.0f} s ago"


class RunLock:
    """Hold ``run_dir/run.lock`` while a run owns ``run_dir``; a context manager."""

    def __init__(self, run_dir: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):  # fmt: skip
        self.path = Path(run_dir) / LOCK_NAME
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.token = secrets.token_hex(8)
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, taking over a stale one; raises ``RunDirectoryLocked`` if a live run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):  # a takeover or a lock being written races us a few times at most
            if self._create():
                break
            owner, mtime = self._read()
            if owner is None:  # vanished, being written this instant, or half-written by a killed run
                age = time.time() - mtime if mtime else 0.0
                reason = f"unreadable for {age:.0f} s" if mtime and age > UNREADABLE_GRACE_S else None
                if reason is None:
                    time.sleep(0.2)
            else:
                reason = stale_reason(owner, mtime, self.stale_after_s)
                if reason is None:
                    raise RunDirectoryLocked(
                        f"{self.path.parent} is in use by another run ({describe(owner, mtime)}; lock {self.path}); "
                        "choose another run_name=..., or wait for that run to end"
                    )  # fmt: skip
            if reason is not None:
                self._take_over(reason, owner)
        else:
            raise RunDirectoryLocked(f"{self.path}: could not take the lock (other runs keep taking it)")
        self.held = True
        _HELD_HERE.add(self.token)
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        owner, _ = self._read()
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        _HELD_HERE.discard(self.token)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- file --------------------------------------------------------------------------
    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(this_owner(self.token), handle)
        return True

    def _read(self) -> tuple[dict[str, Any] | None, float]:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None, 0.0
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None, mtime
        return (owner if isinstance(owner, dict) else None), mtime

    def _take_over(self, reason: str, owner: dict[str, Any] | None) -> None:
        # Renamed aside first: of two runs taking over at once, one rename wins, the other
        # finds the file gone and retries the exclusive create.
        aside = self.path.with_name(f".{LOCK_NAME}.{self.token}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        held_by = describe(owner, 0.0) if owner else "unknown owner"
        log.warning("took over the stale lock %s (%s): %s", self.path, held_by, reason)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            owner, _ = self._read()
            if owner is None or owner.get("token") != self.token:
                log.error("lost the lock %s to another run (%s); this run and that one now share %s",
                          self.path, describe(owner, 0.0) if owner else "lock removed", self.path.parent)  # fmt: skip
                return
            owner["heartbeat"] = time.time()
            temporary = self.path.with_name(f".{LOCK_NAME}.{self.token}.tmp")
            try:
                temporary.write_text(json.dumps(owner))
                os.replace(temporary, self.path)
            except OSError as error:  # a full or flaky disk must not stop training; the lock just ages
                log.warning("could not refresh %s: %s", self.path, error)
