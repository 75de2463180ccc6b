"""MTPG-AIAA's training tasks: ``mtpg/pretrain`` (stage 1) and ``mtpg/finetune`` (stage 2)."""
