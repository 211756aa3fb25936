"""LoRA adapters inside one transformers model, with PEFT.

Contract:

* With no adapter loaded the model is the plain base model: base-only serving never runs
  through PEFT. The first adapter wraps it in a ``PeftModel`` (as ``PeftModel.from_pretrained``
  does: wrap, then ``load_adapter``), later ones are added with ``load_adapter(path,
  adapter_name=name)``; unloading calls ``delete_adapter``, and unloading the last one unwraps
  the model again (``unload()``, which restores the original layers without merging).
* Loading checks before it touches the model: a local PEFT folder (or a hub id, fetched by
  ``huggingface_hub`` like PEFT's own loading), a LoRA adapter, and a warning (not an error:
  folders move) when its ``base_model_name_or_path`` names another model. After loading, every
  tensor of the adapter file must be in the model: PEFT silently skips keys that match no layer
  (a vision-tower LoRA the layer names do not match, for one), and an adapter that lost weights
  answers wrongly without a sign, so that is an error naming the keys. A load that fails leaves
  the model as it was.
* :meth:`PeftAdapterSet.row_groups` and :meth:`PeftAdapterSet.selecting` run a batch: rows of
  different adapters and the base model share one ``generate`` call through PEFT's per-row
  ``adapter_names`` (``"__base__"`` for the base model), unless a loaded adapter has layers in
  the vision tower or uses DoRA: PEFT's mixed batches split a layer's input by batch row, and
  the vision tower's input is the batch's image patches, so then each adapter runs on its own.

Not thread-safe: the engine holds its model lock around every call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

from seesay.engine.adapters import (
    BASE_ADAPTER,
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterSource,
    LoadedAdapter,
    adapter_fingerprint,
    check_adapter_folder,
)
from seesay.errors import AdapterLoadError, ModelNotFoundError

log = logging.getLogger(__name__)


class PeftAdapterSet:
    """The LoRA adapters loaded into ``base`` (see the module docstring).

    Args:
        base: The loaded transformers model.
        model_name: The served model's name, for messages.
        model_source: Where it was loaded from (hub id or folder), to compare with what an
            adapter says it was trained on.
    """

    def __init__(self, base: Any, model_name: str, model_source: str) -> None:
        self._base = base
        self._model_name = model_name
        self._model_names = {Path(model_name).name, Path(model_source).name}
        self._peft: Any = None  # the PeftModel while at least one adapter is loaded
        self._loaded: dict[str, LoadedAdapter] = {}
        self._unmixable: set[str] = set()  # adapters with vision-tower layers or DoRA

    @property
    def model(self) -> Any:
        """What to call ``generate`` on: the ``PeftModel`` while adapters are loaded, else the base model."""
        return self._peft if self._peft is not None else self._base

    @property
    def mixable(self) -> bool:
        """Whether rows of different adapters can share one ``generate`` call now."""
        return not self._unmixable

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def load(self, source: AdapterSource) -> LoadedAdapter:
        """Load ``source`` under its name; the model is unchanged if this raises.

        Raises:
            AdapterLoadError: The adapter is missing, not a LoRA adapter, does not fit the model,
                or lost weights while loading; the message names the folder and the fix.
        """
        if source.name in self._loaded:
            raise AdapterLoadError(f"the LoRA adapter '{source.name}' is already loaded", param="lora_name")
        folder = resolve_adapter_folder(source.path)
        config = check_adapter_folder(folder)
        self._check_config(folder, config)
        fingerprint = adapter_fingerprint(folder)
        try:
            self._inject(source.name, folder)
            self._check_nothing_dropped(source.name, folder)
        except BaseException:
            self._remove(source.name)
            raise
        if not self._mixable_adapter(source.name, config):
            self._unmixable.add(source.name)
        loaded = LoadedAdapter(source.name, source.path, fingerprint, config.get("base_model_name_or_path"))
        self._loaded[source.name] = loaded
        log.info("loaded LoRA adapter '%s' from %s", source.name, folder)
        return loaded

    def unload(self, name: str) -> None:
        """Remove the adapter ``name``; the last one out unwraps the model.

        Raises:
            ModelNotFoundError: No adapter of that name is loaded.
        """
        if name not in self._loaded:
            raise ModelNotFoundError(f"the LoRA adapter '{name}' cannot be found; loaded: "
                                     f"{', '.join(self._loaded) or 'none'}", param="lora_name")
        self._remove(name)
        del self._loaded[name]
        self._unmixable.discard(name)
        log.info("unloaded LoRA adapter '%s'", name)

    def row_groups(self, adapters: Sequence[str | None]) -> list[list[int]]:
        """Row indices that can share one ``generate`` call, in order: all rows when mixing works."""
        if self.mixable or len(set(adapters)) == 1:
            return [list(range(len(adapters)))]
        groups: dict[str | None, list[int]] = {}
        for row, adapter in enumerate(adapters):
            groups.setdefault(adapter, []).append(row)
        return list(groups.values())

    @contextmanager
    def selecting(self, adapters: Sequence[str | None]) -> Iterator[dict[str, Any]]:
        """Set the model up to answer row ``i`` with ``adapters[i]`` (``None``: the base model).

        Yields:
            Extra keyword arguments for ``generate``.
        """
        unknown = {a for a in adapters if a is not None} - set(self._loaded)
        if unknown:
            raise ModelNotFoundError(f"LoRA adapter(s) {', '.join(sorted(unknown))} are not loaded", param="model")
        names = set(adapters)
        if self._peft is None:
            yield {}
        elif names == {None}:
            with self._peft.disable_adapter():
                yield {}
        elif len(names) == 1:
            self._peft.set_adapter(adapters[0])
            yield {}
        else:
            yield {"adapter_names": [a if a is not None else BASE_ADAPTER for a in adapters]}

    # -- loading ----------------------------------------------------------------------------

    def _check_config(self, folder: Path, config: dict[str, Any]) -> None:
        if config.get("peft_type") != "LORA":
            raise AdapterLoadError(f"{folder} holds a {config.get('peft_type')} adapter; seesay serves LoRA "
                                   "adapters only (peft_type LORA in adapter_config.json)")
        trained_on = config.get("base_model_name_or_path")
        if trained_on and Path(str(trained_on)).name not in self._model_names:
            log.warning("LoRA adapter %s was trained on '%s', and this server serves '%s'; loading it anyway "
                        "(folders move), but check it belongs to this model", folder, trained_on, self._model_name)

    def _inject(self, name: str, folder: Path) -> None:
        try:
            if self._peft is None:
                config = PeftConfig.from_pretrained(str(folder))
                config.inference_mode = True
                self._peft = PeftModel(self._base, config, adapter_name=name)
            self._peft.load_adapter(str(folder), adapter_name=name)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise AdapterLoadError(
                f"the LoRA adapter in {folder} does not fit the served model '{self._model_name}': {exc}. "
                "An adapter loads only on the base model it was trained on (see base_model_name_or_path in its "
                f"{CONFIG_FILE}); serve that model, or train the adapter on this one") from None
        self._peft.eval()

    def _check_nothing_dropped(self, name: str, folder: Path) -> None:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
            saved = set(weights.keys())
        # save_embedding_layers=True: keys of every embedding layer count as kept (a superset, which is
        # what this check needs), and PEFT's "auto" would look the base model up on the hub.
        kept = set(get_peft_model_state_dict(self._peft, adapter_name=name, save_embedding_layers=True))
        dropped = sorted(saved - kept)
        if dropped:
            shown = ", ".join(dropped[:5]) + (f" and {len(dropped) - 5} more" if len(dropped) > 5 else "")
            raise AdapterLoadError(
                f"{len(dropped)} of the {len(saved)} tensors in {folder / WEIGHTS_FILE} match no layer of "
                f"'{self._model_name}' and would be silently dropped ({shown}). Check that target_modules in "
                f"{CONFIG_FILE} names layers of this model (vision-tower layers included) and that the adapter "
                "was saved from this model's architecture")

    def _mixable_adapter(self, name: str, config: dict[str, Any]) -> bool:
        if config.get("use_dora"):
            return False
        vision = _vision_tower(self._base)
        if vision is None:
            return True
        return not any(isinstance(m, LoraLayer) and name in m.lora_A for m in vision.modules())

    def _remove(self, name: str) -> None:
        """Take ``name``'s layers out of the model, unwrapping it when no other adapter is left."""
        if self._peft is None or name not in self._peft.peft_config:
            return
        if set(self._peft.peft_config) == {name}:
            self._base = self._peft.unload()
            self._peft = None
        else:
            self._peft.delete_adapter(name)


def resolve_adapter_folder(path: str) -> Path:
    """The local folder of an adapter: ``path`` itself, or a hub id's files fetched like PEFT does.

    Raises:
        AdapterLoadError: Neither an existing folder nor a hub id whose files could be fetched.
    """
    folder = Path(path).expanduser()
    if folder.exists() or path.startswith((".", "/", "~")):
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except Exception as exc:  # huggingface_hub raises many kinds: invalid id, offline, not found
        raise AdapterLoadError(
            f"the LoRA adapter '{path}' is not a local folder, and fetching it from the hub failed ({exc}); "
            "pass the adapter's folder (absolute paths are clearest) or a reachable hub id") from None


def _vision_tower(model: Any) -> Any:
    """The model's vision encoder (Qwen-VL: ``model.visual``), or ``None`` if it has none by that name."""
    return getattr(getattr(model, "model", None), "visual", None) or getattr(model, "visual", None)
