"""CPU tests run on the CPU even where CUDA is visible.

Configs default to ``device: auto``, which picks CUDA when there is one; on a GPU machine
every test that composes a config or starts ``train.py`` / ``test.py`` would then
initialise CUDA (seconds per process), cast the backbone to fp16 and compare against CPU
figures. Tests marked ``cuda`` (tests/test_cuda.py) are the ones meant to use the GPU.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request, monkeypatch):
    if request.node.get_closest_marker("cuda") is not None:
        return
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # commands the test starts see no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # device=auto in this process
