"""AesNet's training tasks: ``aesnet/pretrain``, ``aesnet/finetune`` and ``aesnet/probe``.

Each task config (configs/task/aesnet/*.yaml) names its model builder in
``task.build_model``: AesNet's models are not the MTPG model that ``model=`` describes.
"""
from .. import register_task
from .downstream import build_score_task
from .pretrain import build_pretrain_task

register_task("aesnet/pretrain")(build_pretrain_task)
register_task("aesnet/finetune")(build_score_task)
register_task("aesnet/probe")(build_score_task)
