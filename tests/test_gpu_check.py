"""scripts/gpu_check.py keeps what it measured: a part stopped at its cap keeps the figures
it recorded before, and the run killed from outside writes its JSON before it exits."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, load_script

gpu_check = load_script("scripts/gpu_check.py")
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def _driver(out, cap: int) -> subprocess.Popen:
    command = [sys.executable, "scripts/gpu_check.py", "--parts", "selftest", "--caps", f"selftest={cap}",
               "--device", "cpu", "--out", str(out)]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_part_stopped_at_its_cap_keeps_its_figures_and_log(tmp_path):
    driver = _driver(tmp_path, cap=20)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 0, output
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    part = report["parts"]["selftest"]
    assert part["status"] == "timeout" and part["cap_s"] == 20
    assert report["figures"]["selftest_recorded"]["value"] == 1.0
    assert "sleeping past the cap" in (tmp_path / "parts" / "selftest.log").read_text()
    assert "sleeping past the cap" in output  # progress reaches the driver's output as it comes


@pytest.mark.slow
def test_a_run_killed_from_outside_writes_its_json_and_stops_the_part(tmp_path):
    driver = _driver(tmp_path, cap=300)
    part_json = tmp_path / "parts" / "selftest.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "selftest_recorded" not in (part_json.read_text() if part_json.is_file() else ""):
        time.sleep(0.5)
    assert part_json.is_file(), "the part never recorded its figure"
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=30)
    assert driver.returncode == 128 + signal.SIGTERM, output
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["stopped_by"] == "SIGTERM" and report["parts"]["selftest"]["status"] == "running"
    part = json.loads(part_json.read_text())
    assert part["figures"]["selftest_recorded"]["value"] == 1.0
    result = subprocess.run(["pgrep", "-f", f"part-json {part_json}"], capture_output=True, text=True)
    assert result.stdout.strip() == "", "the part outlived the run"


def test_compile_speed_is_set_beside_the_eager_training_speed():
    parts = {
        "train_full": {"figures": {"full_finetune_images_per_s": {"value": 200.0}}, "full_finetune_warmup_s": 3.0},
        "train_full_compile": {"figures": {"full_finetune_compiled_images_per_s": {"value": 250.0}},
                               "full_finetune_compiled_warmup_s": 63.0},
    }  # fmt: skip
    figures = gpu_check.derived_figures(parts)
    assert figures["compile_speedup_train_full"]["value"] == pytest.approx(1.25)
    assert figures["compile_speedup_train_full"]["met"] is True
    assert figures["compile_time_train_full_s"]["value"] == pytest.approx(60.0)
    assert gpu_check.derived_figures({"train_full": parts["train_full"]}) == {}


def test_the_default_parts_fit_the_budget_and_run_the_compile_parts_last():
    names = gpu_check.DEFAULT_PARTS
    assert names[0] == "cuda_tests" and names[-1] == "train_full_compile" and "forward_b256_compile" not in names
    assert sum(cap for cap, _ in gpu_check.PARTS.values() if cap) > gpu_check.DEFAULT_BUDGET_S  # the budget decides
    assert gpu_check.DEFAULT_BUDGET_S <= 400  # ~7 minutes of device time with the install and start-up


def test_unknown_parts_are_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--parts", "forward_b512", "--device", "cpu"])
    assert "unknown parts" in capsys.readouterr().err
