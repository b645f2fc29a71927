"""The training layer (torch): run configs, the three stages, trainer, losses, checkpoints.

- ``stages``: the run-config schema, YAML overrides and what each stage trains on and with;
- ``trainer``: one trainer for init and stages 1-3; ``data``: torch datasets over clip rows;
- ``losses``, ``caption_tags``, ``evaluation`` (held-out "What am I doing?" accuracy);
- ``checkpoint``, ``distributed`` (DDP / FSDP2), ``tower_pretrain``; ``configs/``.
"""
