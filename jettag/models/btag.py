r"""b-tagging taggers on charged tracks: the PFN baseline, the Vector PFN and the Tensor PFN.

C. Shimmin, Z. Li, E. Smith, "Rethinking SO(3)-equivariance with Bilinear Tensor Networks",
arXiv:2303.11288, section 4. All three are Deep Sets over the tracks of a jet,
:math:`F\big(\sum_{k} \Phi(p_k)\big)` (their eq. 9):

- :class:`TrackPFN`, the baseline (section 4.1): per track the jet
  :math:`(p_T, \eta, \phi)`, the track :math:`(p_T, \Delta\eta, \Delta\phi)`, its impact
  parameters :math:`(d_0, z_0)`, its charge and a 3-dimensional learned embedding of its
  type {hadron, electron, muon}, 12 features; :math:`\Phi` = 2 x 128 ReLU + a linear
  latent layer, :math:`F` = 3 x 128 ReLU + a linear output.
- :class:`TensorPFN` (section 4.2): scalars (charge + type embedding, 4), vectors (jet
  3-momentum, track 3-momentum, 3-D point of closest approach, 3), tensors (the outer
  products of all ordered pairs of those vectors, 9, plus the covariance of the point of
  closest approach, ours); :math:`\Phi` = 2 :class:`~jettag.nn.so2.BilinearTensorLayer`
  (Affine to 2F = 128, SO(2)_j linear, bilinear to 3F = 192, nonlinear) + an output layer
  (Affine to L, SO(2)_j linear); :math:`F` = 3 such layers on the summed latent features,
  the squared norms of all features, 2 x 128 ReLU, a linear output. The jet axis
  :math:`\hat{\mathbf{j}}` of the SO(2)_j layers is the jet three-momentum.
- :class:`VectorPFN`: the same without tensors (the paper's "Bilinear Vector Network").

The equivariant taggers are invariant under any rotation applied to every momentum, point
of closest approach and covariance of a jet (tested to 1e-10 in float64); they break
SO(3) to SO(2) about the jet axis only inside their layers.

Inputs (:class:`TrackInputs`). The taggers read named per-particle columns of
``JetBatch.x``: read the generator's files (:mod:`jettag.data.generate.btag`) with
``JetBatch.from_awkward(array, x_fields=BTAG_X_FIELDS)`` (or any subset in any order,
passing the names as ``x_names``). Tracks are the constituents with ``part_istrack``; the
jet momentum is the sum of all constituents (neutral ones included), as the paper's jets.

Fixed by the paper (section 4): the inputs listed above, :math:`F = 12`, the widths (128,
2F = 128, 3F = 192), the layer counts and orders, sum pooling, two output logits trained
with cross entropy, "P = 30" tracks per jet at most. Ours (the paper does not say):

- the latent width L (128);
- the input scaling. The equivariant layers multiply features at every layer, so their
  inputs must be of order 1 (see the design note of :mod:`jettag.nn.so2`): every vector
  :math:`\mathbf{x}` becomes :math:`\hat{\mathbf{x}} \log(1 + |\mathbf{x}|/s)` (direction
  kept, so every symmetry is kept) with :math:`s` = 30 GeV for momenta and 0.3 mm for
  the point of closest approach (a 1 TeV jet: 3.5; a 1 GeV track: 0.03; a 1 mm
  displacement: 1.5; a 20 µm prompt track: 0.06), the covariance likewise with its
  Frobenius norm and :math:`s^2`;
- the summed latent features are divided by ``pool_scale`` = 30, the paper's track cap
  (a constant the next affine layer could absorb: the model family is the paper's sum,
  only the starting point changes), so that :math:`F` starts at the scale of one track;
- the baseline's scaling: :math:`\log p_T` and signed-log impact parameters;
- the track ordering for the optional 30-track cut (highest pT first; by default all
  tracks are kept);
- the covariance tensor (the paper's data had none: ``covariance=False`` gives its nine
  tensors);
- the SO(2)_j linear map in the output layer of :math:`\Phi` (the paper says only that it
  has "no Bilinear or Nonlinear layers");
- a parameter-free normalisation right before each bilinear product (``norm=True``; see
  :class:`~jettag.nn.so2.EquivariantRMSNorm`).

Measured on 3000 jets of :mod:`jettag.data.generate.btag` (1500 b, 1500 light; widths
32, Adam at lr 1e-3, batches of 100, 4 epochs, 1000 test jets): test AUC 0.94 for the PFN
baseline, 0.87 for the Vector PFN and 0.95 for the Tensor PFN, whose logits stay below 5;
with ``norm=False`` (the paper's literal layers) the Vector and Tensor PFNs stayed at
AUC 0.50 and 0.57: every layer squares the size of its features, so without the
normalisation their outputs are either independent of the jet (1e-8) or huge (1e3).

Example:
    >>> import torch
    >>> from jettag.data import JetBatch
    >>> from jettag.models.btag import BTAG_X_FIELDS, TensorPFN
    >>> model = TensorPFN(hidden_channels=8, latent_channels=4, head_channels=(8,))
    >>> p4 = torch.tensor([[20.0, 10.0, 5.0, 16.0], [12.0, 7.0, 2.0, 9.0], [30.0, 0.0, 20.0, 22.0]])
    >>> x = torch.zeros(3, len(BTAG_X_FIELDS))
    >>> x[:, BTAG_X_FIELDS.index("part_istrack")] = 1.0
    >>> x[:, BTAG_X_FIELDS.index("part_charge")] = torch.tensor([1.0, -1.0, 1.0])
    >>> model(JetBatch.from_counts(p4, [2, 1], x=x)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from jettag import physics
from jettag.nn.so2 import SVT, BilinearTensorLayer, Product, squared_norms
from jettag.ops import ptr_from_batch, segment_sum

if TYPE_CHECKING:
    from jettag.data.batch import JetBatch

__all__ = [
    "BTAG_X_FIELDS",
    "TensorPFN",
    "TrackInputs",
    "TrackPFN",
    "Tracks",
    "VectorPFN",
    "default_config",
    "tensor_pfn",
    "track_pfn",
    "vector_pfn",
]

Task = Literal["btag"]

#: Per-particle fields of the b-tagging generator that the taggers read, in the default
#: column order of ``JetBatch.x`` (``JetBatch.from_awkward(array, x_fields=BTAG_X_FIELDS)``).
BTAG_X_FIELDS: tuple[str, ...] = (
    "part_charge",
    "part_isElectron",
    "part_isMuon",
    "part_istrack",
    "part_d0val",
    "part_dzval",
    "part_pca_x",
    "part_pca_y",
    "part_pca_z",
    "part_cov_xx",
    "part_cov_xy",
    "part_cov_xz",
    "part_cov_yy",
    "part_cov_yz",
    "part_cov_zz",
)

_PCA = ("part_pca_x", "part_pca_y", "part_pca_z")
_COV = ("part_cov_xx", "part_cov_xy", "part_cov_xz", "part_cov_yy", "part_cov_yz", "part_cov_zz")
# (row, column) of each covariance entry; the matrix is symmetric.
_COV_INDEX = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_TASKS = ("btag",)


class Tracks(NamedTuple):
    """The tracks of a batch of jets, packed jet after jet, and what the taggers need of them.

    Shapes: ``p4 (T, 4)``, ``ptr (B + 1,)``, ``batch (T,)``, ``jet_p4 (B, 4)`` (sum of all
    constituents of the jet, tracks or not), ``charge (T,)``, ``kind (T,)`` int64 (0 hadron,
    1 electron, 2 muon), ``d0``, ``z0`` ``(T,)`` (mm), ``pca (T, 3)`` (mm), ``cov (T, 3, 3)``
    (mm^2); the last four are ``None`` unless requested.
    """

    p4: Tensor
    ptr: Tensor
    batch: Tensor
    jet_p4: Tensor
    charge: Tensor
    kind: Tensor
    d0: Tensor | None
    z0: Tensor | None
    pca: Tensor | None
    cov: Tensor | None


class TrackInputs(nn.Module):
    r"""Select the tracks of each jet and read their named fields from ``JetBatch.x``.

    The columns of ``JetBatch.x`` are named by ``x_names`` (default :data:`BTAG_X_FIELDS`,
    the generator's field names); the module reads ``part_charge``, ``part_isElectron``,
    ``part_isMuon``, the track flag ``track_field`` and, when asked for, ``part_d0val`` and
    ``part_dzval``, ``part_pca_x/y/z`` and the six ``part_cov_*`` entries. A constituent is
    a track when its flag is above 0.5 (``track_field=None``: every constituent is a track).
    With ``max_tracks`` only the highest-pT tracks of each jet are kept (the paper keeps
    30). The result does not depend on the order of the constituents (except for exact pT
    ties at the ``max_tracks`` cut), nor on the other jets of the batch.

    Args:
        x_names: names of the columns of ``JetBatch.x``, in order.
        track_field: the column flagging tracks, or ``None``.
        max_tracks: keep at most this many tracks per jet (highest pT first); ``None``: all.
        impact_parameters: read ``part_d0val`` and ``part_dzval``.
        pca: read the point of closest approach ``part_pca_x/y/z``.
        covariance: read its covariance ``part_cov_xx, _xy, _xz, _yy, _yz, _zz``.

    Raises:
        ValueError: (in ``__init__``) a needed field missing from ``x_names``; (in
            ``forward``) a batch without ``x`` or with another number of columns.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets with ``x (P, C)``
        - **output:** :class:`Tracks` with ``T`` tracks

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> from jettag.models.btag import TrackInputs
        >>> inputs = TrackInputs(x_names=["part_charge", "part_isElectron", "part_isMuon",
        ...                               "part_istrack"])
        >>> p4 = torch.tensor([[20.0, 10.0, 5.0, 16.0], [12.0, 7.0, 2.0, 9.0]])
        >>> x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # a muon, a neutral
        >>> tracks = inputs(JetBatch.from_counts(p4, [2], x=x))
        >>> tracks.ptr, tracks.kind, tracks.jet_p4
        (tensor([0, 1]), tensor([2]), tensor([[32., 17.,  7., 25.]]))
    """

    def __init__(
        self,
        *,
        x_names: Sequence[str] = BTAG_X_FIELDS,
        track_field: str | None = "part_istrack",
        max_tracks: int | None = None,
        impact_parameters: bool = False,
        pca: bool = False,
        covariance: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(x_names, str) or not all(isinstance(n, str) for n in x_names):
            raise ValueError(f"x_names: expected a sequence of field names, found {x_names!r}")
        self.x_names = tuple(x_names)
        if max_tracks is not None and (
            isinstance(max_tracks, bool) or not isinstance(max_tracks, int) or max_tracks < 1
        ):
            raise ValueError(f"max_tracks: expected None or a positive int, found {max_tracks!r}")
        self.track_field = track_field
        self.max_tracks = max_tracks
        self.impact_parameters = impact_parameters
        self.pca = pca
        self.covariance = covariance
        needed = ["part_charge", "part_isElectron", "part_isMuon"]
        needed += [track_field] if track_field is not None else []
        needed += ["part_d0val", "part_dzval"] if impact_parameters else []
        needed += list(_PCA) if pca else []
        needed += list(_COV) if covariance else []
        missing = [n for n in needed if n not in self.x_names]
        if missing:
            raise ValueError(
                f"x_names: the columns of JetBatch.x must include {missing} (found "
                f"{list(self.x_names)}); read the jets with "
                "JetBatch.from_awkward(array, x_fields=jettag.models.btag.BTAG_X_FIELDS)"
            )
        self._column = {n: self.x_names.index(n) for n in needed}

    def forward(self, batch: JetBatch) -> Tracks:
        x = batch.x
        if x is None or x.shape[1] != len(self.x_names):
            found = "no x" if x is None else f"x with {x.shape[1]} column(s)"
            raise ValueError(
                f"batch: expected JetBatch.x with the {len(self.x_names)} columns named by "
                f"x_names ({list(self.x_names)}), found {found}; read the jets with "
                "JetBatch.from_awkward(array, x_fields=x_names)"
            )
        num_jets = batch.num_jets
        jet_p4 = physics.jet_p4(batch.p4, batch=batch.batch, num_jets=num_jets)
        keep = self._selection(batch, x)
        index = keep.nonzero().flatten()
        jet_of = batch.batch[index]
        col = self._column

        def take(name: str) -> Tensor:
            return x[index, col[name]]

        kind = torch.zeros(index.shape[0], dtype=torch.int64, device=x.device)
        kind = torch.where(take("part_isElectron") > 0.5, 1, kind)
        kind = torch.where(take("part_isMuon") > 0.5, 2, kind)
        cov = None
        if self.covariance:
            cov = x.new_zeros(index.shape[0], 3, 3)
            for name, (r, c) in zip(_COV, _COV_INDEX, strict=True):
                cov[:, r, c] = take(name)
                cov[:, c, r] = take(name)
        return Tracks(
            p4=batch.p4[index],
            ptr=ptr_from_batch(jet_of, num_jets),
            batch=jet_of,
            jet_p4=jet_p4,
            charge=take("part_charge"),
            kind=kind,
            d0=take("part_d0val") if self.impact_parameters else None,
            z0=take("part_dzval") if self.impact_parameters else None,
            pca=torch.stack([take(n) for n in _PCA], dim=-1) if self.pca else None,
            cov=cov,
        )

    def _selection(self, batch: JetBatch, x: Tensor) -> Tensor:
        """Boolean mask of the kept tracks, ``(P,)``."""
        if self.track_field is None:
            keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        else:
            keep = x[:, self._column[self.track_field]] > 0.5
        if self.max_tracks is None:
            return keep
        # Rank the tracks of each jet by pT (highest first): sort by -pT, then stably by jet.
        pt = torch.where(keep, physics.pt(batch.p4), torch.full_like(x[:, 0], -1.0))
        order = torch.argsort(-pt, stable=True)
        order = order[torch.argsort(batch.batch[order], stable=True)]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=x.device) - batch.ptr[batch.batch[order]]
        return keep & (rank < self.max_tracks)

    def extra_repr(self) -> str:
        read = [k for k, on in (("d0z0", self.impact_parameters), ("pca", self.pca),
                                ("covariance", self.covariance)) if on]
        return (f"columns={len(self.x_names)}, track_field={self.track_field!r}, "
                f"max_tracks={self.max_tracks}, reads={read}")


def _signed_log(x: Tensor, scale: float) -> Tensor:
    """``sign(x) log(1 + |x| / scale)``: sign kept, decades compressed."""
    return torch.sign(x) * torch.log1p(x.abs() / scale)


def _log_compress(x: Tensor, scale: float, dims: tuple[int, ...]) -> Tensor:
    r"""Rescale vectors (``dims=(-1,)``) or tensors (``(-2, -1)``) to the norm
    :math:`\log(1 + \|x\|/s)`, keeping the direction: rotation equivariant (a function of the
    norm times :math:`x`), and finite with finite gradients at :math:`x = 0`."""
    u = x / scale
    n2 = (u * u).sum(dims, keepdim=True)
    tiny = torch.finfo(x.dtype).tiny
    n = n2.clamp_min(tiny).sqrt()
    ratio = torch.where(n > 1e-4, torch.log1p(n) / n, 1.0 - n / 2)
    return u * ratio


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise ValueError(
            f"task: the track taggers are b-taggers, expected one of {list(_TASKS)}, found "
            f"{task!r}"
        )


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, found {value!r}")
    return value


def _widths(sizes: Sequence[int], name: str) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{name}: expected a sequence of positive layer widths, found {sizes!r}")
    return sizes


def _mlp(in_channels: int, hidden: Sequence[int], out_channels: int) -> nn.Sequential:
    """Linear + ReLU per hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_channels, width), nn.ReLU()]
        in_channels = width
    layers.append(nn.Linear(in_channels, out_channels))
    return nn.Sequential(*layers)


class TrackPFN(nn.Module):
    r"""The baseline b-tagger of arXiv:2303.11288 (section 4.1): a PFN on 12 track features.

    .. math::
        \mathrm{logits}_J = F\Big(\sum_{k \in \mathrm{tracks}(J)} \Phi(p_k)\Big),\quad
        p_k = \big(\log p_T^J, \eta^J, \phi^J, \log p_T^k, \Delta\eta^k, \Delta\phi^k,
        \tilde d_0^k, \tilde z_0^k, q^k, e(\mathrm{type}^k)\big)

    with :math:`\Delta\eta, \Delta\phi` measured from the jet momentum (:math:`\Delta\phi`
    wrapped), :math:`e` a learned 3-dimensional embedding of {hadron, electron, muon} and,
    our scaling (the paper gives none), :math:`p_T` in GeV as logarithms and
    :math:`\tilde d = \mathrm{sign}(d) \log(1 + |d| / s_{IP})` with ``ip_scale`` =
    :math:`s_{IP}` = 10 µm, the order of the d0 resolution. :math:`\Phi` and :math:`F` are
    ReLU MLPs whose last layer is linear (paper: hidden widths (128, 128) and
    (128, 128, 128)). Not rotation invariant (it sees :math:`\phi^J`, :math:`d_0`,
    :math:`z_0`): the baseline the equivariant taggers are compared to.

    Args:
        num_classes: number of logits (the paper: 2).
        phi_channels: hidden widths of :math:`\Phi`.
        latent_channels: latent width :math:`L` (not given in the paper; 128).
        f_channels: hidden widths of :math:`F`.
        x_names, track_field, max_tracks: as :class:`TrackInputs`.
        ip_scale: :math:`s_{IP}` in mm.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets (see :class:`TrackInputs`)
        - **output:** logits :math:`(B, \mathrm{num\_classes})`
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        phi_channels: Sequence[int] = (128, 128),
        latent_channels: int = 128,
        f_channels: Sequence[int] = (128, 128, 128),
        x_names: Sequence[str] = BTAG_X_FIELDS,
        track_field: str | None = "part_istrack",
        max_tracks: int | None = None,
        ip_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = _positive(num_classes, "num_classes")
        if not ip_scale > 0:
            raise ValueError(f"ip_scale: expected a positive length in mm, found {ip_scale!r}")
        self.ip_scale = float(ip_scale)
        self.inputs = TrackInputs(
            x_names=x_names, track_field=track_field, max_tracks=max_tracks,
            impact_parameters=True,
        )
        self.type_embedding = nn.Embedding(3, 3)
        self.in_channels = 12
        self.phi = _mlp(
            self.in_channels, _widths(phi_channels, "phi_channels"),
            _positive(latent_channels, "latent_channels"),
        )
        self.f = _mlp(latent_channels, _widths(f_channels, "f_channels"), num_classes)

    @classmethod
    def default_config(cls, task: Task = "btag") -> dict[str, Any]:
        """The paper's baseline: ``Phi (128, 128) -> L``, ``F (128, 128, 128) -> 2``, L = 128."""
        _check_task(task)
        return {
            "num_classes": 2,
            "phi_channels": (128, 128),
            "latent_channels": 128,
            "f_channels": (128, 128, 128),
            "x_names": BTAG_X_FIELDS,
            "track_field": "part_istrack",
            "max_tracks": None,
            "ip_scale": 0.01,
        }

    def features(self, tracks: Tracks) -> Tensor:
        """The 12 per-track features, ``(T, 12)``."""
        jet = tracks.jet_p4[tracks.batch]
        d0, z0 = tracks.d0, tracks.z0
        assert d0 is not None and z0 is not None
        jet_pt = physics.pt(jet)
        columns = [
            torch.log(jet_pt), physics.eta(jet), physics.phi(jet),
            torch.log(physics.pt(tracks.p4)),
            physics.eta(tracks.p4) - physics.eta(jet),
            physics.delta_phi(physics.phi(tracks.p4), physics.phi(jet)),
            _signed_log(d0, self.ip_scale), _signed_log(z0, self.ip_scale), tracks.charge,
        ]
        embedded = self.type_embedding(tracks.kind).to(jet.dtype)
        return torch.cat([torch.stack(columns, dim=-1), embedded], dim=-1)

    def forward(self, batch: JetBatch) -> Tensor:
        tracks = self.inputs(batch)
        latent = segment_sum(self.phi(self.features(tracks)), tracks.ptr)
        return self.f(latent)


class _GeometricPFN(nn.Module):
    """The Vector and Tensor PFN (arXiv:2303.11288, section 4.2); see :class:`TensorPFN`."""

    tensors: bool = True

    def __init__(
        self,
        num_classes: int = 2,
        *,
        hidden_channels: int = 128,
        phi_layers: int = 2,
        latent_channels: int = 128,
        f_layers: int = 3,
        head_channels: Sequence[int] = (128, 128),
        so2: bool = True,
        product: Product | None = "bilinear",
        norm: bool = True,
        covariance: bool = True,
        x_names: Sequence[str] = BTAG_X_FIELDS,
        track_field: str | None = "part_istrack",
        max_tracks: int | None = None,
        momentum_scale: float = 30.0,
        ip_scale: float = 0.3,
        pool_scale: float = 30.0,
    ) -> None:
        super().__init__()
        self.num_classes = _positive(num_classes, "num_classes")
        for name, value in (("momentum_scale", momentum_scale), ("ip_scale", ip_scale),
                            ("pool_scale", pool_scale)):
            if not value > 0:
                raise ValueError(f"{name}: expected a positive scale, found {value!r}")
        self.momentum_scale = float(momentum_scale)
        self.ip_scale = float(ip_scale)
        self.pool_scale = float(pool_scale)
        self.covariance = bool(covariance) and self.tensors
        self.inputs = TrackInputs(
            x_names=x_names, track_field=track_field, max_tracks=max_tracks, pca=True,
            covariance=self.covariance,
        )
        self.type_embedding = nn.Embedding(3, 3)
        n_tensors = (9 + self.covariance) if self.tensors else 0
        self.in_channels = (4, 3, n_tensors)
        hidden = _positive(hidden_channels, "hidden_channels")
        latent = _positive(latent_channels, "latent_channels")
        layer_options = {"so2": so2, "product": product, "norm": norm}
        phi: list[BilinearTensorLayer] = []
        channels: Sequence[int] = self.in_channels
        for _ in range(_positive(phi_layers, "phi_layers")):
            phi.append(BilinearTensorLayer(channels, hidden, **layer_options))
            channels = phi[-1].out_channels
        phi.append(BilinearTensorLayer(channels, latent, so2=so2, product=None, activation=False))
        self.phi = nn.ModuleList(phi)
        channels = phi[-1].out_channels
        f: list[BilinearTensorLayer] = []
        for _ in range(_positive(f_layers, "f_layers")):
            f.append(BilinearTensorLayer(channels, hidden, **layer_options))
            channels = f[-1].out_channels
        self.f = nn.ModuleList(f)
        self.head = _mlp(sum(channels), _widths(head_channels, "head_channels"), num_classes)

    @classmethod
    def default_config(cls, task: Task = "btag") -> dict[str, Any]:
        """The paper's widths: 2F = 128 (3F = 192 after the bilinear layers), 2 + 1 layers
        in Phi, 3 in F, a (128, 128) head; L = 128 and the scalings are ours."""
        _check_task(task)
        config: dict[str, Any] = {
            "num_classes": 2,
            "hidden_channels": 128,
            "phi_layers": 2,
            "latent_channels": 128,
            "f_layers": 3,
            "head_channels": (128, 128),
            "so2": True,
            "product": "bilinear",
            "norm": True,
            "x_names": BTAG_X_FIELDS,
            "track_field": "part_istrack",
            "max_tracks": None,
            "momentum_scale": 30.0,
            "ip_scale": 0.3,
            "pool_scale": 30.0,
        }
        if cls.tensors:
            config["covariance"] = True
        return config

    def features(self, tracks: Tracks) -> SVT:
        """Per-track scalars ``(T, 4)``, vectors ``(T, 3, 3)`` and tensors ``(T, 9|10, 3, 3)``."""
        jet = tracks.jet_p4[tracks.batch]
        assert tracks.pca is not None
        vectors = torch.stack(
            [
                _log_compress(jet[:, 1:], self.momentum_scale, (-1,)),
                _log_compress(tracks.p4[:, 1:], self.momentum_scale, (-1,)),
                _log_compress(tracks.pca, self.ip_scale, (-1,)),
            ],
            dim=1,
        )
        embedded = self.type_embedding(tracks.kind).to(jet.dtype)
        scalars = torch.cat([tracks.charge[:, None], embedded], dim=-1)
        if not self.tensors:
            return SVT(scalars, vectors, None)
        outer = vectors[:, :, None, :, None] * vectors[:, None, :, None, :]
        tensors = outer.reshape(-1, 9, 3, 3)
        if self.covariance:
            assert tracks.cov is not None
            cov = _log_compress(tracks.cov, self.ip_scale**2, (-2, -1))
            tensors = torch.cat([tensors, cov[:, None]], dim=1)
        return SVT(scalars, vectors, tensors)

    def forward(self, batch: JetBatch) -> Tensor:
        tracks = self.inputs(batch)
        jet_axis = tracks.jet_p4[:, 1:]
        x = self.features(tracks)
        track_axis = jet_axis[tracks.batch]
        for layer in self.phi:
            x = layer(*x, track_axis)
        x = SVT(*(None if y is None else segment_sum(y, tracks.ptr) / self.pool_scale for y in x))
        for layer in self.f:
            x = layer(*x, jet_axis)
        return self.head(squared_norms(*x))


class VectorPFN(_GeometricPFN):
    r"""Vector PFN b-tagger (arXiv:2303.11288, section 4.2, vectors only).

    As :class:`TensorPFN` without tensor features: per track 4 scalars (charge, type
    embedding) and 3 vectors (jet momentum, track momentum, point of closest approach);
    the bilinear layers then give :math:`2F` outputs per representation
    (:math:`[s_a s_b, \mathbf{v}_a\cdot\mathbf{v}_b]` and
    :math:`[s_a \mathbf{v}_b, \mathbf{v}_a\times\mathbf{v}_b]`). The SO(2)_j linear layers
    give it the axis-dependent maps the paper credits for most of the gain.

    Args:
        As :class:`TensorPFN`, without ``covariance``.

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets (see :class:`TrackInputs`)
        - **output:** logits :math:`(B, \mathrm{num\_classes})`
    """

    tensors = False

    def __init__(self, num_classes: int = 2, **config: Any) -> None:
        if "covariance" in config:
            raise ValueError("covariance: the Vector PFN has no tensor inputs; use TensorPFN")
        super().__init__(num_classes, **config)


class TensorPFN(_GeometricPFN):
    r"""Tensor PFN b-tagger of arXiv:2303.11288 (section 4.2): a Bilinear Tensor Network.

    .. math::
        \mathrm{logits}_J = \mathrm{MLP}\Big(\mathrm{norms}\,F_{\hat{j}}\Big(\sum_{k}
        \Phi_{\hat{j}}(s_k, \mathbf{v}_k, T_k)\Big)\Big)

    Per track: scalars :math:`s` = (charge, 3-dim learned type embedding); vectors
    :math:`\mathbf{v}` = (jet 3-momentum, track 3-momentum, point of closest approach
    :math:`\mathbf{a}`); tensors :math:`T` = the 9 outer products
    :math:`\mathbf{v}_m \otimes \mathbf{v}_n` and (``covariance=True``, ours) the
    covariance of :math:`\mathbf{a}`. Our scaling (the paper gives none): every vector
    :math:`\mathbf{x}` is replaced by :math:`\hat{\mathbf{x}} \log(1 + |\mathbf{x}|/s)`
    (momenta: :math:`s` = ``momentum_scale`` GeV; :math:`\mathbf{a}`: ``ip_scale`` mm) and
    the covariance likewise with its Frobenius norm and ``ip_scale``²; this keeps each
    direction and so every symmetry. :math:`\Phi`: ``phi_layers`` ×
    :class:`~jettag.nn.so2.BilinearTensorLayer` (Affine to ``hidden_channels`` = 2F, SO(2)_j
    linear, bilinear to 3F, VReLU/TReLU/ReLU) and an output layer (Affine to
    ``latent_channels``, SO(2)_j linear); sum over tracks divided by ``pool_scale``;
    :math:`F`: ``f_layers`` layers
    like the hidden ones, with the jet's axis; the scalars and squared norms of all
    vectors and tensors; a ReLU MLP ``head_channels`` with a linear output.

    Args:
        num_classes: number of logits (the paper: 2).
        hidden_channels: 2F, the affine width of every hidden layer (paper: 128).
        phi_layers: hidden layers of :math:`\Phi` (paper: 2).
        latent_channels: L, the width of the summed features (not in the paper; 128).
        f_layers: layers of :math:`F` (paper: 3).
        head_channels: hidden widths of the final scalar MLP (paper: (128, 128)).
        so2: use the SO(2)_j linear layers (paper ablation: off).
        product: ``"bilinear"`` (paper), ``None`` (paper ablation: no bilinear layer) or
            ``"e3nn"`` (the full-SO(3) :class:`~jettag.nn.so2.E3NNTensorBlock`, for
            comparison; heavy at the paper's widths).
        norm: normalise before each product (ours, see
            :class:`~jettag.nn.so2.BilinearTensorLayer`); ``False`` is the paper's literal
            layer, which did not train on our generated jets.
        covariance: add the covariance of the point of closest approach as a tenth tensor.
        x_names, track_field, max_tracks: as :class:`TrackInputs`.
        momentum_scale: :math:`s` of the momenta (GeV).
        ip_scale: :math:`s` of the point of closest approach (mm).
        pool_scale: divisor of the summed latent features (the paper's track cap, 30).

    Shapes:
        - **input:** a :class:`~jettag.data.JetBatch` of ``B`` jets (see :class:`TrackInputs`)
        - **output:** logits :math:`(B, \mathrm{num\_classes})`
    """

    tensors = True


def track_pfn(**config: Any) -> TrackPFN:
    """Build a :class:`TrackPFN` (registry name ``"track-pfn"``); see its ``default_config``."""
    return TrackPFN(**config)


def vector_pfn(**config: Any) -> VectorPFN:
    """Build a :class:`VectorPFN` (registry name ``"vector-pfn"``); see its ``default_config``."""
    return VectorPFN(**config)


def tensor_pfn(**config: Any) -> TensorPFN:
    """Build a :class:`TensorPFN` (registry name ``"tensor-pfn"``); see its ``default_config``."""
    return TensorPFN(**config)


def default_config(
    task: Task = "btag", model: Literal["track-pfn", "vector-pfn", "tensor-pfn"] = "tensor-pfn"
) -> dict[str, Any]:
    """Default keyword arguments of ``model`` for ``task`` (only ``"btag"``)."""
    classes: dict[str, type[TrackPFN] | type[_GeometricPFN]] = {
        "track-pfn": TrackPFN, "vector-pfn": VectorPFN, "tensor-pfn": TensorPFN,
    }
    if model not in classes:
        raise ValueError(f"model: expected one of {sorted(classes)}, found {model!r}")
    return classes[model].default_config(task)
