"""Import the published LorentzNet checkpoints (sdogsq/LorentzNet-release) into jettag.

The authors of LorentzNet (arXiv:2201.08187) released weights trained on the Top Quark
Tagging Reference Dataset (``logs/top/pretrained/best-val-model.pt``) and on the Pythia
quark/gluon dataset (``logs/qg/pretrained/best-val-model.pt``). They are state dicts of their
``LorentzNet`` module saved from DistributedDataParallel (keys prefixed ``module.``). The
importer maps them onto :class:`jettag.models.lorentznet.LorentzNet`, sets the model up
to prepare its inputs as the authors' data pipeline did, so that it runs on a ``JetBatch``
of constituent four-momenta (GeV), and returns it wrapped in a :class:`~jettag.hub.Tagger`
(``tagger.model`` is the LorentzNet):

- top: two beam particles, scalars from the constituent masses (the training constituents,
  Delphes E-flow objects, are massless: the tagger's input preprocessing makes every
  constituent massless, ``massless=True``); classes ``QCD``, ``top``;
- quark/gluon: no beams, one-hot |PDG id| scalars, four-momenta rebuilt from (pT, y, phi)
  and the PDG mass; the id is read from ``JetBatch.x[:, 0]`` (e.g.
  ``JetBatch.from_awkward(jets, x_fields=["part_pid"])``; the tagger reads the field
  ``part_pid``); classes ``gluon``, ``quark``.

Both were trained and evaluated with a readout that averages over the padded length of the
batch, which the imported model reproduces by default (``readout="padded_mean"`` with a
fixed padded length :data:`RELEASE_PAD_TO`; ``pad_to=None`` reproduces the authors'
batch-wise padding exactly).

Example:
    >>> from jettag.hub.lorentznet import load_lorentznet_release
    >>> tagger = load_lorentznet_release("best-val-model.pt")  # doctest: +SKIP
    >>> tagger.predict(jets).score  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jettag.hub.tagger import Tagger
from jettag.models.lorentznet import LorentzNet, Readout, default_config

__all__ = ["RELEASE_PAD_TO", "load_lorentznet_release", "release_to_jettag_state_dict"]

#: Padded number of constituents ``pad_to`` of the imported models' ``"padded_mean"``
#: readout, per task; fixed, so that a jet's score does not depend on its batch.
#: Quark/gluon: 139, the padded length of ``QG_jets.npz`` (the authors read the files
#: padded once). Top: the authors pad each batch of 32 jets to its longest jet; 84 is the
#: median of that length on top-tagging-recipe jets (mean multiplicity 48, as the reference
#: dataset's 49). Measured on one sample of 2,000 generated jets per task: AUC 0.9938 (top)
#: and 0.932 (q/g) with these, 0.9938 and 0.932 with batch-wise padding (``pad_to=None``),
#: 0.9937 and 0.926 with ``readout="mean"`` (q/g accuracy 0.856, 0.837 and 0.804). On
#: another sample, with these: 0.991 and 0.907.
RELEASE_PAD_TO: dict[str, int] = {"top": 84, "qg": 139}

_PREFIX = "module."
_KEY_MAP: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (r"embedding\.(weight|bias)", r"embedding.\1"),
        (r"LGEBs\.(\d+)\.(phi_[ehxm]\.\d+\.\w+)", r"blocks.\1.\2"),
        (r"graph_dec\.(\d+)\.(weight|bias)", r"decoder.\1.\2"),
    )
)
_NUM_SCALARS_TO_TASK = {2: "top", 8: "qg"}
# Per task: class names (label order of the authors' datasets) and input preprocessing.
_TASK_TAGGER: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {
    "top": (("QCD", "top"), {"massless": True}),
    "qg": (("gluon", "quark"), {"x_fields": ["part_pid"]}),
}


def release_to_jettag_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of a LorentzNet-release state dict to jettag's :class:`LorentzNet`.

    Strips the ``module.`` prefix of DistributedDataParallel when every key has it, then
    maps ``LGEBs.<i>.*`` to ``blocks.<i>.*`` and ``graph_dec.*`` to ``decoder.*``; tensors
    are shared, not copied. Shapes are not checked here (see
    :func:`load_lorentznet_release`).

    Raises:
        ValueError: naming the keys that are not LorentzNet-release weights.
    """
    if state and all(key.startswith(_PREFIX) for key in state):
        state = {key[len(_PREFIX):]: value for key, value in state.items()}
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        for pattern, template in _KEY_MAP:
            if pattern.fullmatch(key):
                out[pattern.sub(template, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"expected LorentzNet-release weights (embedding.*, LGEBs.<i>.phi_[ehxm].*, "
            f"graph_dec.*), found keys that are not: {sorted(unknown)}"
        )
    return out


def load_lorentznet_release(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    task: str | None = None,
    c_weight: float | None = None,
    readout: Readout = "padded_mean",
    pad_to: int | str | None = "release",
    map_location: str | torch.device = "cpu",
) -> Tagger:
    """Build a jettag :class:`LorentzNet` from a LorentzNet-release checkpoint, as a ``Tagger``.

    The architecture (scalars, hidden width, blocks, classes) is read from the tensor
    shapes; the task from the number of input scalars (2: top tagging with beams, 8: quark/
    gluon with PDG ids) unless given. The coordinate-update weight is not stored in the
    weights: it defaults to the value the authors trained the task with (5e-3 top, 1e-3
    quark/gluon, from their ``args.json``).

    Args:
        path_or_state_dict: a ``.pt`` file, read with ``torch.load(weights_only=True)``, or
            its state dict; keys with or without the ``module.`` prefix.
        task: ``"top"`` or ``"qg"`` (inputs, ``c_weight``), inferred when ``None``.
        c_weight: weight of the coordinate updates (default: the task's).
        readout: ``"padded_mean"`` (as trained, default) or ``"mean"`` (average over each
            jet's nodes; costs accuracy on the q/g weights, see :data:`RELEASE_PAD_TO`).
        pad_to: padded constituents of the ``"padded_mean"`` readout; ``"release"`` takes
            :data:`RELEASE_PAD_TO` of the task, ``None`` the longest jet of each batch.
        map_location: where to load the tensors.

    Returns:
        A :class:`~jettag.hub.Tagger` in evaluation mode (``tagger.model`` is the
        LorentzNet, inputs prepared as the task's training data): classes ``QCD, top`` with
        massless constituents (top), or ``gluon, quark`` reading ``part_pid`` (qg).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a state dict; keys that do not map, missing keys or
            tensors of the wrong shape (all named); a ``task`` that does not fit the weights.

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> tagger = load_lorentznet_release("lorentznet-release_top_best-val-model.pt")
        ... # doctest: +SKIP
        >>> p4 = torch.tensor([[50.0, 30, 0, 40], [130, 50, 120, 0], [25, 0, 7, 24]])
        >>> tagger.predict(JetBatch.from_counts(p4, [2, 1])).score  # doctest: +SKIP
    """
    state, source = _read_state_dict(path_or_state_dict, map_location)
    try:
        state = release_to_jettag_state_dict(state)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    config = _infer_config(state, source, task)
    task = config.pop("task")
    if c_weight is not None:
        config["c_weight"] = c_weight
    if pad_to == "release":
        pad_to = RELEASE_PAD_TO[task]
    elif pad_to is not None and not isinstance(pad_to, int):
        raise ValueError(f"pad_to: expected 'release', None or an int, found {pad_to!r}")
    model = LorentzNet(readout=readout, pad_to=pad_to, **config)

    expected = model.state_dict()
    wrong_shape = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    problems = []
    if wrong_shape:
        problems.append(f"tensors of the wrong shape: {wrong_shape}")
    if unexpected:
        problems.append(f"unexpected weights (jettag names): {unexpected}")
    if missing:
        problems.append(f"missing weights (jettag names): {missing}")
    if problems:
        raise ValueError(
            f"{source}: expected a LorentzNet-release state dict for {config['num_scalars']} "
            f"scalars, {config['hidden_channels']} hidden channels, {config['num_layers']} "
            f"blocks; " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    classes, inputs = _TASK_TAGGER[task]
    return Tagger.from_model(
        model,
        architecture="lorentznet",
        config={"readout": readout, "pad_to": pad_to, **config},
        class_names=classes,
        signal=classes[1],
        inputs=inputs,
        name=f"lorentznet-release-{task}",
        card={"summary": f"LorentzNet-release {task} checkpoint imported from {source}"},
    )


def _read_state_dict(
    source: str | os.PathLike[str] | Mapping[str, Tensor], map_location: str | torch.device
) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, Mapping):
        state: Any = source
        where = "state dict"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such LorentzNet-release checkpoint file")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:
            raise ValueError(
                f"{path}: expected a PyTorch state dict readable with "
                f"torch.load(weights_only=True), could not read it ({err})"
            ) from err
        where = str(path)
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise ValueError(
            f"{where}: expected a state dict (str -> Tensor), found {type(state).__name__}"
        )
    return dict(state), where


def _infer_config(state: Mapping[str, Tensor], source: str, task: str | None) -> dict[str, Any]:
    embedding = state.get("embedding.weight")
    decoder = state.get("decoder.3.weight")
    if embedding is None or embedding.dim() != 2 or decoder is None or decoder.dim() != 2:
        raise ValueError(
            f"{source}: expected LorentzNet-release weights with 2-d 'embedding.weight' and "
            f"'graph_dec.3.weight', found keys {sorted(state)[:6]}..."
        )
    hidden, num_scalars = embedding.shape
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))}
    num_layers = max(blocks) + 1 if blocks else 0
    inferred = _NUM_SCALARS_TO_TASK.get(num_scalars)
    if task is None:
        if inferred is None:
            raise ValueError(
                f"{source}: cannot tell the task from {num_scalars} input scalars (2 = top, "
                f"8 = qg); pass task='top' or task='qg'"
            )
        task = inferred
    elif task not in _NUM_SCALARS_TO_TASK.values():
        raise ValueError(f"task: expected 'top', 'qg' or None, found {task!r}")
    elif inferred != task:
        expected = {v: k for k, v in _NUM_SCALARS_TO_TASK.items()}[task]
        raise ValueError(
            f"{source}: task={task!r} takes {expected} input scalars but the weights have "
            f"{num_scalars}"
        )
    config = default_config(task)
    config.update(task=task, num_scalars=num_scalars, hidden_channels=hidden,
                  num_layers=num_layers, num_classes=decoder.shape[0])
    return config
