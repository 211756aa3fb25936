"""The built-in demo model: a tiny real Qwen3-VL trained by seesay on a drawn product catalogue.

It makes seesay work offline, with no checkpoint to download: the engine loads it from
``seesay/demo/model`` when no other model is configured. Modules:

* :mod:`~seesay.demo.catalogue` – item kinds, colours, questions and canonical answers; samples;
* :mod:`~seesay.demo.drawing` – the Pillow pictures;
* :mod:`~seesay.demo.tokenizer` – a small byte-level BPE with Qwen's special tokens and chat format;
* :mod:`~seesay.demo.model` – the ``Qwen3VLConfig`` and processor, and saving them;
* :mod:`~seesay.demo.options`, :mod:`~seesay.demo.train` – deterministic training from scratch;
* :mod:`~seesay.demo.evaluate` – exact-match accuracy through the engine API;
* :mod:`~seesay.demo.commands` – ``seesay demo images|build|eval|examples``;
* :mod:`~seesay.demo.examples` – bundled example pictures (``seesay ask example:red-tshirt``).

Nothing is imported here, so ``import seesay.demo.catalogue`` stays free of torch.
"""
