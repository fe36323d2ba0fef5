"""Import weaver-core ``ParticleNet`` weights into :class:`jettag.models.particlenet.ParticleNet`.

weaver-core (https://github.com/hqucms/weaver-core) stores ParticleNet as channels-first
convolutions on padded jets; the published Particle Transformer repository
(jet-universe/particle_transformer) wraps it in a module whose state-dict keys start with
``mod.``. The importer reads such a state dict, infers the architecture from the tensor
shapes and returns the equivalent jettag model wrapped in a :class:`~jettag.hub.Tagger`
(class names, input preprocessing, ``predict``, ``save``), whose outputs on packed jets equal
weaver-core's on the same jets padded (evaluation mode, jets with more than ``k``
particles). The model itself is ``tagger.model``.

:func:`to_weaver_state_dict` goes the other way, for running a jettag model in weaver-core
(or its ONNX export pipeline).

Example:
    >>> from jettag.hub.weaver import load_weaver_particlenet, to_weaver_state_dict
    >>> from jettag.models.particlenet import particlenet_lite
    >>> state = to_weaver_state_dict(particlenet_lite(num_classes=10), prefix="mod.")
    >>> state["mod.edge_convs.0.convs.0.weight"].shape
    torch.Size([32, 14, 1, 1])
    >>> tagger = load_weaver_particlenet(state)
    >>> tagger.model.block_params, tagger.num_classes
    (((7, (32, 32, 32)), (7, (64, 64, 64))), 10)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from jettag.hub.tagger import Tagger
from jettag.models.particlenet import (
    LITE_BLOCKS,
    PARTICLENET_BLOCKS,
    ParticleNet,
)

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = ["load_weaver_particlenet", "to_weaver_state_dict"]

# Prefixes added around weaver-core's ParticleNet: the Particle Transformer repository's
# wrapper (``mod.``) and DistributedDataParallel (``module.``).
_PREFIXES = ("module.", "mod.")

#: Class names of the published datasets, by the prefix of ParticleNet's feature set and the
#: number of classes (outputs in label order).
DATASET_CLASSES: dict[tuple[str, int], tuple[str, ...]] = {
    ("top-tagging", 2): ("QCD", "top"),
    ("quark-gluon", 2): ("gluon", "quark"),
    ("jetclass", 10): ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"),
}

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
# weaver-core key pattern -> jettag key template and whether the tensor is a 1x1 convolution
# kernel to flatten into a linear weight. The classifier's layers ("hidden": fc.<i>.0, the
# Linear of a (Linear, ReLU, Dropout) block; "final": fc.<n>) go to head.<3 i>.
_KEY_MAP: tuple[tuple[re.Pattern[str], str, bool], ...] = tuple(
    (re.compile(pattern), template, conv)
    for pattern, template, conv in (
        (rf"bn_fts\.{_BN}", r"input_norm.\1", False),
        (r"edge_convs\.(\d+)\.convs\.(\d+)\.weight", r"blocks.\1.linears.\2.weight", True),
        (rf"edge_convs\.(\d+)\.bns\.(\d+)\.{_BN}", r"blocks.\1.norms.\2.\3", False),
        (r"edge_convs\.(\d+)\.sc\.weight", r"blocks.\1.shortcut.weight", True),
        (rf"edge_convs\.(\d+)\.sc_bn\.{_BN}", r"blocks.\1.shortcut_norm.\2", False),
        (r"fusion_block\.0\.weight", r"fusion.0.weight", True),
        (rf"fusion_block\.1\.{_BN}", r"fusion.1.\1", False),
        (r"fc\.(\d+)\.0\.(weight|bias)", "hidden", False),
        (r"fc\.(\d+)\.(weight|bias)", "final", False),
    )
)


def load_weaver_particlenet(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    k: int | Sequence[int] | None = None,
    dropout: float = 0.1,
    inputs: Callable[[JetBatch], tuple[Tensor, Tensor]] | str | None = None,
    x_names: Sequence[str] | None = None,
    x_fields: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    signal: str | int | None = None,
    map_location: str | torch.device = "cpu",
) -> Tagger:
    """Build a jettag ParticleNet from weaver-core ``ParticleNet`` weights, as a ``Tagger``.

    The architecture (EdgeConv blocks and their widths, input features, input BatchNorm,
    fusion block, hidden layers, classes) is read from the tensor shapes. The number of
    neighbours is not stored in the weights: by default it is 16 for ParticleNet's block
    widths and 7 for ParticleNet-Lite's, as published; other layouts need ``k``.

    Args:
        path_or_state_dict: a ``.pt`` file (read with ``torch.load(weights_only=True)``) or
            a state dict, keys optionally prefixed with ``mod.`` (Particle Transformer
            repository) or ``module.`` (DistributedDataParallel).
        k: neighbours per block, one int for all blocks or one per block.
        dropout: dropout of the hidden fully connected layers (not stored in the weights).
        inputs, x_names: how the model builds its inputs from a ``JetBatch``, as in
            :class:`~jettag.models.particlenet.ParticleNet`: e.g. ``"jetclass:kin"`` for
            the Particle Transformer repository's ``ParticleNet_kin.pt``. Default: none
            (use ``tagger.model.forward_tensors``).
        x_fields: per-particle fields of the canonical awkward layout that fill
            ``JetBatch.x`` (the tagger's input preprocessing); default: ``x_names``, each
            prefixed with ``part_`` unless it already is.
        class_names: names of the outputs; default: the dataset's classes when ``inputs``
            names a feature set of the top-tagging, quark/gluon or JetClass data and the
            number of outputs fits (:data:`DATASET_CLASSES`), else ``class_0, ...``.
        signal: the signal class of a two-class tagger (default: the second).
        map_location: where to load the tensors.

    Returns:
        A :class:`~jettag.hub.Tagger` in evaluation mode (``tagger.model`` is the
        ParticleNet). It can be saved with ``tagger.save`` when ``inputs`` is a feature-set
        name or ``None``, not a callable.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a state dict, the state dict is not weaver-core's
            ``ParticleNet`` (keys that do not map, missing keys, shapes that do not fit),
            or ``k`` is needed and missing.
    """
    state, source = _load_state_dict(path_or_state_dict, map_location)
    state = _strip_prefixes(state)
    config = _infer_config(state, source)
    blocks = config.pop("blocks")
    ks = _resolve_k(k, blocks, source)
    model = ParticleNet(
        blocks=list(zip(ks, blocks, strict=True)),
        fc=[(width, dropout) for width in config.pop("fc")],
        inputs=inputs,
        x_names=x_names,
        **config,
    )
    expected = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    wrong_shape: dict[str, str] = {}
    for key, value in state.items():
        target = _map_key(key, len(model.fc_params))
        if target is None or target[0] not in expected:
            unexpected.append(key)
            continue
        name, conv = target
        if conv and value.dim() > 2 and all(s == 1 for s in value.shape[2:]):
            value = value.reshape(value.shape[:2])
        if value.shape != expected[name].shape:
            wrong_shape[name] = (
                f"{key} {tuple(value.shape)} (jettag {name} expects {tuple(expected[name].shape)})"
            )
            continue
        mapped[name] = value
    missing = sorted(set(expected) - set(mapped) - set(wrong_shape))
    problems = []
    if unexpected:
        problems.append(f"keys that are not weaver-core ParticleNet weights: {sorted(unexpected)}")
    if wrong_shape:
        problems.append(f"tensors of the wrong shape: {list(wrong_shape.values())}")
    if missing:
        problems.append(f"missing weights (jettag names): {missing}")
    if problems:
        raise ValueError(
            f"{source}: expected a weaver-core ParticleNet state dict; " + "; ".join(problems)
        )
    model.load_state_dict(mapped, strict=True)
    model.eval()
    if x_fields is None:
        x_fields = [n if n.startswith("part_") else f"part_{n}" for n in (x_names or ())]
    if class_names is None and isinstance(inputs, str):
        class_names = DATASET_CLASSES.get((inputs.split(":")[0], model.num_classes))
    saveable = inputs is None or isinstance(inputs, str)
    rebuild = {
        "input_dims": model.input_dims,
        "num_classes": model.num_classes,
        "blocks": [[k, list(widths)] for k, widths in model.block_params],
        "fc": [[width, drop] for width, drop in model.fc_params],
        "use_fusion": model.use_fusion,
        "use_fts_bn": model.use_fts_bn,
        "inputs": inputs,
        "x_names": None if x_names is None else list(x_names),
    }
    return Tagger.from_model(
        model,
        architecture="particlenet" if saveable else None,
        config=rebuild if saveable else None,
        class_names=class_names,
        signal=signal,
        inputs={"x_fields": list(x_fields)},
        name="weaver-particlenet",
        card={"summary": f"weaver-core ParticleNet imported from {source}"},
    )


def to_weaver_state_dict(model: ParticleNet | Tagger, *, prefix: str = "") -> dict[str, Tensor]:
    """The state dict of weaver-core's ``ParticleNet`` with the weights of ``model``.

    Load it into ``weaver.nn.model.ParticleNet.ParticleNet(input_dims, num_classes,
    conv_params=model.block_params, fc_params=model.fc_params, use_fusion=model.use_fusion,
    use_fts_bn=model.use_fts_bn)``; use ``prefix="mod."`` for the Particle Transformer
    repository's wrapper. Tensors are shared with the model, not copied.

    Args:
        model: a jettag ParticleNet (every EdgeConv block with mean aggregation), or a
            ``Tagger`` holding one.
        prefix: prepended to every key.

    Raises:
        ValueError: a block aggregates with something else than the mean, which weaver-core
            does not support, or the model is not a ParticleNet.
    """
    if isinstance(model, Tagger):
        model = model.model
    if not isinstance(model, ParticleNet):
        raise ValueError(f"model: expected a jettag ParticleNet, found {type(model).__name__}")
    for i, block in enumerate(model.blocks):
        if block.aggr != "mean":
            raise ValueError(
                f"model: block {i} aggregates with {block.aggr!r}; weaver-core's ParticleNet "
                "only averages over neighbours (aggr='mean')"
            )
    num_fc = len(model.fc_params)
    out: dict[str, Tensor] = {}
    for name, value in model.state_dict().items():
        key, conv_dims = _weaver_key(name, num_fc)
        if conv_dims:
            value = value.reshape(*value.shape, *([1] * conv_dims))
        out[prefix + key] = value
    return out


def _weaver_key(name: str, num_fc: int) -> tuple[str, int]:
    # jettag key -> (weaver-core key, trailing kernel dimensions of the convolution).
    parts = name.split(".")
    if parts[0] == "input_norm":
        return "bn_fts." + parts[1], 0
    if parts[0] == "blocks":
        block, kind, rest = parts[1], parts[2], parts[3:]
        if kind == "linears":
            return f"edge_convs.{block}.convs.{rest[0]}.weight", 2
        if kind == "norms":
            return f"edge_convs.{block}.bns.{rest[0]}.{rest[1]}", 0
        if kind == "shortcut":
            return f"edge_convs.{block}.sc.weight", 1
        return f"edge_convs.{block}.sc_bn.{rest[0]}", 0
    if parts[0] == "fusion":
        return f"fusion_block.{parts[1]}.{parts[2]}", 1 if parts[1] == "0" else 0
    index = int(parts[1]) // 3
    if index < num_fc:
        return f"fc.{index}.0.{parts[2]}", 0
    return f"fc.{index}.{parts[2]}", 0


def _load_state_dict(
    source: str | os.PathLike[str] | Mapping[str, Tensor], map_location: str | torch.device
) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, Mapping):
        state, where = source, "state dict"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such weaver-core checkpoint file")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:
            raise ValueError(
                f"{path}: expected a PyTorch state dict readable with "
                f"torch.load(weights_only=True), could not read it ({err})"
            ) from err
        where = str(path)
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise ValueError(
            f"{where}: expected a state dict (str -> Tensor), found {type(state).__name__}"
        )
    return dict(state), where


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    while state:
        for prefix in _PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                break
        else:
            return state
    return state


def _consecutive(state: Mapping[str, Tensor], template: str) -> list[Tensor]:
    found = []
    while (key := template.format(len(found))) in state:
        found.append(state[key])
    return found


def _infer_config(state: Mapping[str, Tensor], source: str) -> dict:
    first = state.get("edge_convs.0.convs.0.weight")
    if first is None:
        hint = ""
        if any(key.startswith(("pn.", "pf_conv.")) for key in state):
            hint = (
                " (this looks like weaver-core's ParticleNetTagger with separate PF/SV inputs, "
                "which jettag does not import)"
            )
        raise ValueError(
            f"{source}: expected a weaver-core ParticleNet state dict with the key "
            f"'edge_convs.0.convs.0.weight', found keys {sorted(state)[:8]}...{hint}"
        )
    blocks = []
    for i in range(len(_consecutive(state, "edge_convs.{}.convs.0.weight"))):
        weights = _consecutive(state, f"edge_convs.{i}.convs.{{}}.weight")
        blocks.append(tuple(int(w.shape[0]) for w in weights))
    hidden = _consecutive(state, "fc.{}.0.weight")
    final = state.get(f"fc.{len(hidden)}.weight")
    if final is None or final.dim() != 2 or any(w.dim() != 2 for w in hidden):
        raise ValueError(
            f"{source}: expected the classifier of a weaver-core ParticleNet (linear layers "
            f"'fc.<i>.0.weight' and a final 'fc.{len(hidden)}.weight', 2-D), found "
            f"{sorted(key for key in state if key.startswith('fc.'))} (segmentation models "
            "are not supported)"
        )
    return {
        "input_dims": int(first.shape[1]) // 2,
        "num_classes": int(final.shape[0]),
        "blocks": blocks,
        "fc": [int(w.shape[0]) for w in hidden],
        "use_fusion": "fusion_block.0.weight" in state,
        "use_fts_bn": "bn_fts.weight" in state,
    }


def _resolve_k(
    k: int | Sequence[int] | None, blocks: list[tuple[int, ...]], source: str
) -> list[int]:
    if k is None:
        for published in (PARTICLENET_BLOCKS, LITE_BLOCKS):
            if blocks == [widths for _, widths in published]:
                return [kk for kk, _ in published]
        raise ValueError(
            f"{source}: the number of neighbours is not stored in the weights and the block "
            f"widths {blocks} are neither ParticleNet's nor ParticleNet-Lite's; pass k=..."
        )
    ks = [k] * len(blocks) if isinstance(k, int) else [int(kk) for kk in k]
    if len(ks) != len(blocks):
        raise ValueError(
            f"k: expected one int or {len(blocks)} values (one per EdgeConv block of "
            f"{source}), found {list(ks)}"
        )
    return ks


def _map_key(key: str, num_fc: int) -> tuple[str, bool] | None:
    for pattern, template, conv in _KEY_MAP:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        if template in ("hidden", "final"):
            index, param = int(match.group(1)), match.group(2)
            if (template == "hidden") != (index < num_fc):
                return None
            return f"head.{3 * index}.{param}", conv
        return match.expand(template), conv
    return None
