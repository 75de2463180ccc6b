"""MTPG-AIAA's training tasks: ``mtpg/pretrain`` (stage 1) and ``mtpg/finetune`` (stage 2)."""
from .. import register_task
from .finetune import build_finetune_task
from .pretrain import build_pretrain_task

register_task("mtpg/pretrain")(build_pretrain_task)
register_task("mtpg/finetune")(build_finetune_task)
