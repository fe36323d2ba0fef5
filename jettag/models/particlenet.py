"""ParticleNet and ParticleNet-Lite: stacked EdgeConv blocks on the particle cloud of a jet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from jettag.nn.edge_conv import EdgeConv
from jettag.ops import segment_mean

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch
    from jettag.data.features import Preprocessor

__all__ = [
    "LITE_BLOCKS",
    "LITE_FC",
    "PARTICLENET_BLOCKS",
    "PARTICLENET_FC",
    "ParticleNet",
    "ParticleNetInputs",
    "default_config",
    "particlenet",
    "particlenet_lite",
]

Blocks = Sequence[tuple[int, Sequence[int]]]
FullyConnected = Sequence[tuple[int, float]]
Inputs = Callable[["JetBatch"], tuple[Tensor, Tensor]]

#: EdgeConv blocks ``(k, widths)`` of ParticleNet (arXiv:1902.08570, Table 1).
PARTICLENET_BLOCKS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (16, (64, 64, 64)),
    (16, (128, 128, 128)),
    (16, (256, 256, 256)),
)
#: Hidden fully connected layers ``(width, dropout)`` of ParticleNet.
PARTICLENET_FC: tuple[tuple[int, float], ...] = ((256, 0.1),)
#: EdgeConv blocks of ParticleNet-Lite.
LITE_BLOCKS: tuple[tuple[int, tuple[int, ...]], ...] = ((7, (32, 32, 32)), (7, (64, 64, 64)))
#: Hidden fully connected layers of ParticleNet-Lite.
LITE_FC: tuple[tuple[int, float], ...] = ((128, 0.1),)

# Per task: the data card feature set of the inputs and the classes. "qg" adds the charge
# and five particle-identification flags, computed from the PDG id held in JetBatch.x, to
# the seven kinematic features (the Particle Transformer repository's "kinpid" inputs).
_TASKS: dict[str, dict[str, Any]] = {
    "top": {"inputs": "top-tagging:kin", "num_classes": 2},
    "qg": {"inputs": "quark-gluon:kinpid", "x_names": ("pid",), "num_classes": 2},
}


def default_config(task: str) -> dict[str, Any]:
    """Task-dependent configuration of ParticleNet and ParticleNet-Lite.

    Returns the keyword arguments that depend on the task (``inputs``, ``x_names``,
    ``num_classes``); the architecture comes from the factory, e.g.
    ``particlenet_lite(**default_config("qg"))``.

    Args:
        task: ``"top"``: the 7 kinematic features of the top-tagging card (log pT, log E,
            log pT/pT_jet, log E/E_jet, Delta R, d-eta, d-phi), 2 classes; ``"qg"``: those
            plus the charge and 5 particle-identification flags of the quark/gluon card
            (13 features) from the PDG id in ``JetBatch.x`` (one column), 2 classes.
    """
    try:
        return dict(_TASKS[task])
    except KeyError:
        raise ValueError(f"task: expected one of {sorted(_TASKS)}, found {task!r}") from None


class ParticleNetInputs(nn.Module):
    """ParticleNet's inputs from a ``JetBatch``: a data card feature set, packed.

    Evaluates the ``points`` and ``features`` groups of the feature set with
    :class:`jettag.data.features.Preprocessor` (its variables, centring, scaling and
    clipping; no padding).

    Args:
        feature_set: ``"card"`` (the card's default set) or ``"card:set"``, e.g.
            ``"top-tagging:kin"``, ``"quark-gluon:kinpid"``, ``"jetclass:full"``.
        x_names: names of the columns of ``JetBatch.x`` (e.g. ``("pid",)``) for variables
            that the momenta do not give.

    Shapes:
        - **input:** a ``JetBatch`` of ``P`` particles
        - **output:** ``points`` :math:`(P, 2)`, ``features`` :math:`(P, C)`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.particlenet import ParticleNetInputs
        >>> inputs = ParticleNetInputs("top-tagging:kin")
        >>> inputs
        ParticleNetInputs('top-tagging:kin', features=7)
        >>> p4 = torch.tensor([[100.0, 60.0, 0.0, 80.0], [50.0, 0.0, 30.0, 40.0]])
        >>> points, features = inputs(JetBatch.from_counts(p4, [2]))
        >>> points.shape, features.shape
        (torch.Size([2, 2]), torch.Size([2, 7]))
    """

    def __init__(self, feature_set: str, *, x_names: Sequence[str] | None = None) -> None:
        super().__init__()
        from jettag.data.features import Preprocessor

        card, _, name = feature_set.partition(":")
        self.preprocessor: Preprocessor = Preprocessor.from_card(card, name or None)
        missing = {"points", "features"} - set(self.preprocessor.groups)
        if missing:
            raise ValueError(
                f"feature_set: ParticleNet needs the input groups 'points' and 'features', "
                f"{self.preprocessor.name!r} lacks {sorted(missing)}"
            )
        self.feature_set = self.preprocessor.name
        self.x_names = None if x_names is None else tuple(x_names)
        self.out_channels = len(self.preprocessor.names("features"))

    def forward(self, jets: JetBatch) -> tuple[Tensor, Tensor]:
        groups = self.preprocessor(jets, x_names=self.x_names)
        return groups["points"], groups["features"]

    def __repr__(self) -> str:
        x_names = "" if self.x_names is None else f", x_names={list(self.x_names)}"
        return f"{type(self).__name__}({self.feature_set!r}, features={self.out_channels}{x_names})"


class ParticleNet(nn.Module):
    r"""ParticleNet: dynamic-graph EdgeConv blocks, global mean pooling and a classifier.

    From "ParticleNet: Jet Tagging via Particle Clouds" (H. Qu, L. Gouskos,
    arXiv:1902.08570), numerically equal to weaver-core's ``ParticleNet`` in evaluation
    mode. With :math:`x^{(0)}` the (batch-normalised) input features and
    :math:`p^{(0)} = (\Delta\eta, \Delta\phi)`,

    .. math::
        x^{(l)} = \mathrm{EdgeConv}_l\big(x^{(l-1)};\, \mathrm{kNN}_k(p^{(l-1)})\big),
        \qquad p^{(l)} = x^{(l)}, \qquad
        \mathrm{logits} = \mathrm{MLP}\Big(\frac{1}{n}\sum_{i=1}^{n} x^{(L)}_i\Big),

    the neighbours of the first block being found in :math:`(\Delta\eta, \Delta\phi)` and
    those of later blocks in the features of the previous block (a dynamic graph), and the
    mean running over the :math:`n` real particles of the jet. With ``use_fusion`` the
    outputs of all blocks are concatenated and mapped to
    :math:`\mathrm{clip}(128\lfloor C/128 \rfloor, 128, 1024)` channels (linear without bias,
    BatchNorm, ReLU) before pooling. The MLP is (linear, ReLU, dropout) per entry of ``fc``
    and a final linear map to the logits.

    Jets with fewer than ``k + 1`` particles use the neighbours they have (see
    :class:`~jettag.nn.edge_conv.EdgeConv`); weaver-core there takes padded slots as
    neighbours, so the two agree on jets with more than ``k`` particles. In training mode
    BatchNorm statistics run over real particles and edges only (weaver-core includes the
    padded slots), see :class:`~jettag.nn.edge_conv.EdgeConv`.

    Args:
        input_dims: features per particle; by default the number of features of ``inputs``.
        num_classes: number of output logits.
        blocks: EdgeConv blocks as ``(k, widths)``; defaults to ParticleNet's
            :data:`PARTICLENET_BLOCKS` (:data:`LITE_BLOCKS` for ParticleNet-Lite).
        fc: hidden fully connected layers ``(width, dropout)`` before the output layer.
        use_fusion: concatenate the outputs of all blocks and fuse them before pooling.
        use_fts_bn: BatchNorm on the input features (weaver's ``use_fts_bn``).
        inputs: how :meth:`forward` builds ``(points (P, 2), features (P, C))`` from a
            ``JetBatch``: a data card feature set such as ``"top-tagging:kin"`` (see
            :class:`ParticleNetInputs`) or any callable; None for a model used through
            :meth:`forward_tensors` only.
        x_names: names of the columns of ``JetBatch.x`` for a feature set given by name.

    Shapes:
        - **points:** :math:`(P, 2)` coordinates of the first neighbour search
        - **features:** :math:`(P, C)` input features, C = ``input_dims``
        - **ptr:** :math:`(B + 1,)` int64 CSR offsets of the jets
        - **output:** :math:`(B, \text{num\_classes})` logits

    Example:
        >>> import torch
        >>> from jettag.models.particlenet import particlenet_lite
        >>> from jettag.testing import random_jets
        >>> model = particlenet_lite(inputs="top-tagging:kin", num_classes=2).eval()
        >>> model  # doctest: +NORMALIZE_WHITESPACE
        ParticleNet(7 -> 2, blocks=[(k=7, [32, 32, 32]), (k=7, [64, 64, 64])], fc=[128],
                    fusion=False, fts_bn=True, params=26,416)
        >>> jets = random_jets(3, 20, generator=0, layout="batch", dtype=torch.float32)
        >>> model(jets).shape
        torch.Size([3, 2])
        >>> points, features = torch.randn(30, 2), torch.randn(30, 7)
        >>> ptr = torch.tensor([0, 12, 30])  # two jets: 12 and 18 particles
        >>> model.forward_tensors(points, features, ptr).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        input_dims: int | None = None,
        num_classes: int = 2,
        *,
        blocks: Blocks = PARTICLENET_BLOCKS,
        fc: FullyConnected = PARTICLENET_FC,
        use_fusion: bool = False,
        use_fts_bn: bool = True,
        inputs: Inputs | str | None = None,
        x_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(inputs, str):
            inputs = ParticleNetInputs(inputs, x_names=x_names)
        elif x_names is not None:
            raise ValueError(
                "ParticleNet: x_names goes with inputs given as a feature set name "
                f"(e.g. 'quark-gluon:kinpid'), found inputs={inputs!r}"
            )
        if isinstance(inputs, ParticleNetInputs):
            if input_dims is None:
                input_dims = inputs.out_channels
            elif input_dims != inputs.out_channels:
                raise ValueError(
                    f"ParticleNet: input_dims={input_dims} but inputs {inputs!r} give "
                    f"{inputs.out_channels} features per particle"
                )
        if input_dims is None:
            raise ValueError(
                "ParticleNet: give input_dims (features per particle) or inputs as a data card "
                "feature set such as 'top-tagging:kin'"
            )
        if input_dims < 1 or num_classes < 1:
            raise ValueError(
                f"ParticleNet: expected positive input_dims and num_classes, found "
                f"input_dims={input_dims}, num_classes={num_classes}"
            )
        if not blocks:
            raise ValueError("ParticleNet: blocks must list at least one (k, widths) block")
        self.input_dims = input_dims
        self.num_classes = num_classes
        self.block_params = tuple((int(k), tuple(int(w) for w in widths)) for k, widths in blocks)
        self.fc_params = tuple((int(width), float(drop)) for width, drop in fc)
        self.use_fusion = use_fusion
        self.use_fts_bn = use_fts_bn
        self.inputs = inputs

        self.input_norm = nn.BatchNorm1d(input_dims) if use_fts_bn else None
        convs = []
        in_channels = input_dims
        for k, widths in self.block_params:
            convs.append(EdgeConv(in_channels, widths, k=k))
            in_channels = widths[-1]
        self.blocks = nn.ModuleList(convs)
        if use_fusion:
            fused_in = sum(widths[-1] for _, widths in self.block_params)
            fused_out = min(max(fused_in // 128 * 128, 128), 1024)
            self.fusion: nn.Sequential | None = nn.Sequential(
                nn.Linear(fused_in, fused_out, bias=False), nn.BatchNorm1d(fused_out), nn.ReLU()
            )
            in_channels = fused_out
        else:
            self.fusion = None
        layers: list[nn.Module] = []
        for width, drop in self.fc_params:
            layers += [nn.Linear(in_channels, width), nn.ReLU(), nn.Dropout(drop)]
            in_channels = width
        layers.append(nn.Linear(in_channels, num_classes))
        self.head = nn.Sequential(*layers)

    @classmethod
    def default_config(cls, task: str) -> dict[str, Any]:
        """Task-dependent keyword arguments; see :func:`default_config`."""
        return default_config(task)

    def reset_parameters(self) -> None:
        """Re-initialise weights (PyTorch defaults) and BatchNorm statistics."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.BatchNorm1d)):
                module.reset_parameters()

    def forward(self, jets: JetBatch) -> Tensor:
        """Logits ``(B, num_classes)`` of a ``JetBatch``, inputs built by ``self.inputs``."""
        if self.inputs is None:
            raise ValueError(
                "ParticleNet.forward: this model has no `inputs` to build (points, features) "
                "from a JetBatch; pass inputs=... when creating it, or call "
                "forward_tensors(points, features, ptr)"
            )
        points, features = self.inputs(jets)
        return self.forward_tensors(points, features, jets.ptr)

    def forward_tensors(self, points: Tensor, features: Tensor, ptr: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` from packed ``points (P, 2)``, ``features (P, C)``."""
        if features.dim() != 2 or features.shape[1] != self.input_dims:
            raise ValueError(
                f"ParticleNet: features must be (P, {self.input_dims}), "
                f"found {tuple(features.shape)}"
            )
        if points.dim() != 2 or points.shape[0] != features.shape[0]:
            raise ValueError(
                f"ParticleNet: points must be (P, D) with P = {features.shape[0]} rows like "
                f"features, found {tuple(points.shape)}"
            )
        x = self.input_norm(features) if self.input_norm is not None else features
        pos = points
        outputs = []
        for block in self.blocks:
            x = block(x, pos, ptr)
            pos = x
            outputs.append(x)
        if self.fusion is not None:
            x = self.fusion(torch.cat(outputs, dim=1))
        return self.head(segment_mean(x, ptr))

    def __repr__(self) -> str:
        blocks = ", ".join(f"(k={k}, {list(widths)})" for k, widths in self.block_params)
        fc = [width for width, _ in self.fc_params]
        return (
            f"{type(self).__name__}({self.input_dims} -> {self.num_classes}, blocks=[{blocks}], "
            f"fc={fc}, fusion={self.use_fusion}, fts_bn={self.use_fts_bn}, "
            f"params={sum(p.numel() for p in self.parameters()):,})"
        )


def _with_task_defaults(config: dict[str, Any]) -> dict[str, Any]:
    # Top-tagging inputs unless the caller chose the inputs or their number.
    if "inputs" not in config and "input_dims" not in config:
        config = {**default_config("top"), **config}
    return config


def particlenet(**config: Any) -> ParticleNet:
    """ParticleNet (366,160 parameters with 7 input features and 2 classes, no fusion).

    Keyword arguments are those of :class:`ParticleNet`; without ``inputs`` and
    ``input_dims`` the inputs are those of the top-tagging task (:func:`default_config`).
    """
    return ParticleNet(**_with_task_defaults(config))


def particlenet_lite(**config: Any) -> ParticleNet:
    """ParticleNet-Lite (26,416 parameters with 7 input features and 2 classes).

    Blocks :data:`LITE_BLOCKS` and hidden layer :data:`LITE_FC`; other keyword arguments as
    :func:`particlenet`.
    """
    return ParticleNet(**_with_task_defaults({"blocks": LITE_BLOCKS, "fc": LITE_FC, **config}))
