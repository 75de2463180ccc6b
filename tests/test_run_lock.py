"""The run-directory lock (engine/run_lock.py): a live run refuses a second one, a lock left
by a killed, requeued or vanished run is taken over with a log line (issue 21 item 7)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time

import pytest

from mtpg_aiaa.engine import run_lock
from mtpg_aiaa.engine.cli_errors import one_line_errors
from mtpg_aiaa.engine.run_lock import LOCK_NAME, RunDirectoryLocked, RunLock
from helpers import compose_config, load_script


def write_lock(run_dir, **owner):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"token": "someone-else", "host": socket.gethostname(), "pid": os.getpid(), "pid_started": None,
              "slurm_job_id": None, "started": time.time(), "heartbeat": time.time(), **owner}  # fmt: skip
    (run_dir / LOCK_NAME).write_text(json.dumps(record))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_second_run_in_a_live_runs_directory_is_refused_naming_the_owner(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirectoryLocked, match=rf"in use by another run \(host {socket.gethostname()}, pid {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    # released: the next run takes it, and leaves no lock behind either
    with RunLock(tmp_path / "run"):
        pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_live_process_on_this_host_or_a_fresh_heartbeat_elsewhere_keeps_its_lock(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        write_lock(tmp_path / "a", pid=sleeper.pid, pid_started=run_lock.process_start_time(sleeper.pid))
        with pytest.raises(RunDirectoryLocked, match=f"pid {sleeper.pid}"):
            RunLock(tmp_path / "a").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    write_lock(tmp_path / "b", host="other-node", pid=1, slurm_job_id="77")
    with pytest.raises(RunDirectoryLocked, match="host other-node, pid 1, SLURM job 77"):
        RunLock(tmp_path / "b").acquire()


@pytest.mark.parametrize("case", ["killed", "pid reused", "restarted container", "requeued", "dead node", "half-written"])
def test_a_stale_lock_is_taken_over_with_a_log_line(tmp_path, monkeypatch, caplog, case):
    run_dir = tmp_path / "run"
    old = time.time() - 3600
    if case == "killed":  # SIGKILL: the pid is gone
        write_lock(run_dir, pid=dead_pid())
    elif case == "pid reused":  # the pid lives, but started after the lock was written
        write_lock(run_dir, pid=os.getppid(), pid_started="1")
    elif case == "restarted container":  # our own pid, but not a lock this process holds
        write_lock(run_dir)
    elif case == "requeued":  # SLURM requeue: same job id, another node
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
        write_lock(run_dir, host="node-17", pid=12345, slurm_job_id="4242")
    elif case == "dead node":  # another host on a shared file system stopped beating
        write_lock(run_dir, host="node-3", pid=12345, heartbeat=old)
        os.utime(run_dir / LOCK_NAME, (old, old))
    else:  # killed between creating and filling the lock
        run_dir.mkdir()
        (run_dir / LOCK_NAME).write_text('{"host": "n')
        os.utime(run_dir / LOCK_NAME, (old, old))
    with caplog.at_level(logging.WARNING, logger="mtpg_aiaa.engine.run_lock"):
        with RunLock(run_dir) as lock:
            assert json.loads((run_dir / LOCK_NAME).read_text())["token"] == lock.token
    assert any("took over the stale lock" in record.getMessage() for record in caplog.records)


def test_the_heartbeat_refreshes_the_lock_while_the_run_lives(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0.05):
        first = json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"]
        deadline = time.time() + 5
        while json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.05)
        assert json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"] > first


def test_train_refuses_a_run_name_a_live_run_owns_in_one_line_exit_2(tmp_path, monkeypatch, capsys):
    train_module = load_script("train.py")
    monkeypatch.setattr(train_module, "build_training_model", lambda *a, **k: pytest.fail("the model was built"))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = compose_config("train", "model=tiny", "data=csv", f"paths.output_root={tmp_path}", "run_name=shared",
                         "device=cpu")  # fmt: skip
    with RunLock(tmp_path / "train" / "shared"):
        with pytest.raises(SystemExit) as exit_info:
            one_line_errors(train_module.train)(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "in use by another run" in err and err.count("\n") == 1
    assert not (tmp_path / "train" / "shared" / "config.yaml").exists()  # nothing of the first run overwritten
