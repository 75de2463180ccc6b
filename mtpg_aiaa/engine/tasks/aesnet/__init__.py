"""AesNet's training tasks: ``aesnet/pretrain``, ``aesnet/finetune`` and ``aesnet/probe``.

Each task config (configs/task/aesnet/*.yaml) names its builder in
``task._target_`` (``instantiate(cfg.task, model=model)``); their models are ``configs/model/aesnet/``.
"""
