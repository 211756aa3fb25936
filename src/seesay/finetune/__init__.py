"""LoRA fine-tuning of Qwen3-VL models: datasets, training, evaluation and merging.

:mod:`~seesay.finetune.datasets` reads ms-swift and LLaMA-Factory files (no torch);
:mod:`~seesay.finetune.train` trains an adapter with the loop of :mod:`seesay.training`;
:mod:`~seesay.finetune.evaluate` scores a model (with or without an adapter) on a dataset;
:mod:`~seesay.finetune.merge` folds an adapter into its base model.
"""
