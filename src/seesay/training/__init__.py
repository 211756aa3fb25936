"""Training Qwen3-VL models in seesay: one loop for the demo build and for LoRA fine-tuning.

:mod:`seesay.training.batches` holds encoded sequences and their pictures and pads them into
batches; :mod:`seesay.training.loop` runs the optimiser over them with gradient accumulation,
a learning-rate schedule, periodic evaluation, atomic checkpoints and resumption
(:mod:`seesay.training.checkpoints`). Importing this package needs torch (the ``model`` extra).
"""
