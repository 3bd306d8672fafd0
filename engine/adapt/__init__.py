"""Online draft adaptation (issue 13): the draft learns from the target while you chat.

- ``record``   the decode loop's observer keeps the target's top-k at verified positions;
               a bounded on-disk buffer of recorded answers per (target, draft) pair
- ``lora``     LoRA adapters on the draft's last blocks: train copies, save, fuse or apply
- ``train``    forward-KL distillation in interruptible slices (frozen prefix computed once)
- ``store``    the pair's folder: buffer, adapter versions, which one is adopted
- ``run``      ``Adaptation``: record, adapt, adopt only if held-out agreement holds, use
- ``evaluate`` acceptance and tokens per pass of a pair on a prompt set (``canopy adapt``)
"""
