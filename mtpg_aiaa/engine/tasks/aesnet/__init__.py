"""AesNet's training tasks: ``aesnet/pretrain``, ``aesnet/finetune`` and ``aesnet/probe``.

Each task config (configs/task/aesnet/*.yaml) names its builder in
``task._target_`` (``instantiate(cfg.task, model=model)``); their models are ``configs/model/aesnet/``.
"""
from .. import register_task
from .downstream import build_score_task
from .pretrain import build_pretrain_task

register_task("aesnet/pretrain")(build_pretrain_task)
register_task("aesnet/finetune")(build_score_task)
register_task("aesnet/probe")(build_score_task)
