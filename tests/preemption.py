"""Test helper: run a training as if the cluster pre-empted it after a given step."""
from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from mtpg_aiaa.engine import trainer as trainer_module


def train_preempted(train: Callable, cfg, monkeypatch: pytest.MonkeyPatch, at_step: int = 2) -> None:
    """``train(cfg)``, with SIGTERM's stop request raised right after optimizer step
    ``at_step``: the trainer writes last.pt and raises ``TrainingInterrupted``, as on a cluster's pre-emption."""
    original_step = trainer_module.Trainer._optimizer_step

    def preempt(self):
        original_step(self)
        if self.step == at_step:
            self._stop_signal = signal.SIGTERM

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_optimizer_step", preempt)
        with pytest.raises(trainer_module.TrainingInterrupted):
            train(cfg)
