"""The HTTP layer: an OpenAI-compatible API in front of :class:`seesay.service.AnswerService`.

Build it with :func:`seesay.api.app.build_app`; run it with ``seesay serve``
(:mod:`seesay.api.commands`). Nothing here imports torch.
"""
