"""``JetBatch``: the canonical batch of jets, packed constituents with CSR offsets.

Every reader, the generator, the feature builders and every model meet here. A batch holds
the constituents of ``B`` jets back to back (``P`` particles in all, no padding) and the
offsets ``ptr`` that say where each jet starts. It converts losslessly to and from a padded
view with a mask, a ``torch_geometric.data.Batch`` and an awkward Array; those two libraries
are imported only inside the methods that need them, so ``import jettag.data`` stays light.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import awkward as ak
    from torch_geometric.data import Batch

__all__ = ["JetBatch"]

#: Per-particle fields of the canonical awkward layout holding (E, px, py, pz) in GeV.
MOMENTUM_FIELDS: tuple[str, str, str, str] = ("part_energy", "part_px", "part_py", "part_pz")
#: Per-particle field of the canonical awkward layout holding ``JetBatch.x`` (var * C).
X_FIELD = "part_x"

# Instance attributes that a jet-level field may not shadow (properties and methods are
# checked on the class itself).
_INSTANCE_ATTRIBUTES = frozenset({"p4", "ptr", "x", "label", "fields"})
# Attributes that to_pyg writes itself.
_PYG_ATTRIBUTES = frozenset({"p4", "x", "y", "batch", "ptr", "num_nodes"})


class JetBatch:
    """A batch of jets: packed constituents, CSR offsets, labels and jet-level fields.

    Jet ``j`` owns particles ``ptr[j]:ptr[j + 1]`` of ``p4`` (and of ``x``). Jets may be
    empty. The batch is treated as immutable: methods return new batches (sharing tensors
    where possible) and never modify their inputs.

    Conversions, all exact (bit for bit) in both directions:

    - padded: :meth:`to_padded` / :meth:`from_padded`, ``(B, N, 4)`` with a bool mask,
      ``True`` = real particle, real particles first in each row;
    - PyTorch Geometric: :meth:`to_pyg` / :meth:`from_pyg`, one graph (without edges) per jet,
      with attributes ``p4``, ``x``, ``y`` (the label) and the fields under their own names;
    - awkward: :meth:`to_awkward` / :meth:`from_awkward`, the canonical record layout
      ``part_energy, part_px, part_py, part_pz`` (var * float), ``part_x`` (var * C * float),
      ``label`` and the jet-level fields under their own names.

    Args:
        p4: four-momenta ``(E, px, py, pz)`` in GeV, floating point, finite.
        ptr: CSR offsets, int64, ``ptr[0] == 0``, nondecreasing, ``ptr[-1] == P``.
        x: optional per-particle features with the dtype of ``p4``, finite.
        label: optional class label per jet (any dtype, int64 for classification).
        fields: optional jet-level tensors (e.g. ``"truth_p4"``), each with first dim ``B``.
            They are also readable as attributes (``jets.truth_p4``), so a name may not
            shadow an attribute of ``JetBatch`` (``p4``, ``counts``, ``to``, ...).

    Raises:
        ValueError: naming the argument, what was expected and what was found, for a wrong
            shape or dtype, non-finite momenta or features, malformed offsets, or a label or
            field whose length is not ``B``.

    Shapes:
        - **p4:** :math:`(P, 4)`
        - **x:** :math:`(P, C)` or ``None``
        - **ptr:** :math:`(B + 1,)`; **batch**, the jet index of each particle: :math:`(P,)`
        - **counts:** :math:`(B,)`; **label:** :math:`(B,)` or ``None``
        - **fields[name]:** :math:`(B, *)`

    Example:
        >>> import torch
        >>> from jettag.data import JetBatch
        >>> p4 = torch.tensor([[5.0, 1.0, 2.0, 3.0], [4.0, 0.0, 1.0, 2.0], [9.0, 3.0, 4.0, 5.0]])
        >>> jets = JetBatch.from_counts(p4, [2, 0, 1], label=torch.tensor([1, 0, 1]))
        >>> jets
        JetBatch(jets=3, particles=3, x=None, fields=[], dtype=float32)
        >>> jets.ptr, jets.batch
        (tensor([0, 2, 2, 3]), tensor([0, 0, 2]))
        >>> padded, _, mask = jets.to_padded()
        >>> mask
        tensor([[ True,  True],
                [False, False],
                [ True, False]])
        >>> jets[[2, 0]].counts
        tensor([1, 2])
    """

    p4: Tensor
    ptr: Tensor
    x: Tensor | None
    label: Tensor | None
    fields: dict[str, Tensor]

    def __init__(
        self,
        p4: Tensor,
        ptr: Tensor,
        *,
        x: Tensor | None = None,
        label: Tensor | None = None,
        fields: Mapping[str, Tensor] | None = None,
    ) -> None:
        fields = _as_field_dict(fields, "JetBatch")
        _validate(p4, ptr, x, label, fields, where="JetBatch")
        self._set(p4, ptr, x, label, fields)

    def _set(
        self,
        p4: Tensor,
        ptr: Tensor,
        x: Tensor | None,
        label: Tensor | None,
        fields: dict[str, Tensor],
    ) -> None:
        self.p4 = p4
        self.ptr = ptr
        self.x = x
        self.label = label
        self.fields = fields
        self._batch_cache: tuple[Tensor, Tensor] | None = None

    @classmethod
    def _trusted(
        cls,
        p4: Tensor,
        ptr: Tensor,
        x: Tensor | None,
        label: Tensor | None,
        fields: dict[str, Tensor],
    ) -> JetBatch:
        # Built from a batch that was already validated (indexing, moves): skip the checks,
        # which would cost a host-device synchronisation each.
        out = cls.__new__(cls)
        out._set(p4, ptr, x, label, fields)
        return out

    @classmethod
    def _build(
        cls,
        p4: Tensor,
        ptr: Tensor,
        x: Tensor | None,
        label: Tensor | None,
        fields: Mapping[str, Tensor] | None,
        *,
        where: str,
    ) -> JetBatch:
        field_dict = _as_field_dict(fields, where)
        _validate(p4, ptr, x, label, field_dict, where=where)
        return cls._trusted(p4, ptr, x, label, field_dict)

    # ------------------------------------------------------------------ sizes and metadata

    @property
    def num_jets(self) -> int:
        """Number of jets ``B``."""
        return self.ptr.shape[0] - 1

    @property
    def num_particles(self) -> int:
        """Total number of particles ``P``."""
        return self.p4.shape[0]

    @property
    def counts(self) -> Tensor:
        """Number of particles in each jet, ``(B,)`` int64."""
        return self.ptr.diff()

    @property
    def jet_sizes(self) -> Tensor:
        """Alias of :attr:`counts`: number of particles in each jet, ``(B,)`` int64."""
        return self.counts

    @property
    def batch(self) -> Tensor:
        """Jet index of each particle, ``(P,)`` int64 (computed once, then cached)."""
        cache = self._batch_cache
        if cache is None or cache[0] is not self.ptr:
            index = torch.repeat_interleave(
                torch.arange(self.num_jets, device=self.ptr.device),
                self.counts,
                output_size=self.num_particles,
            )
            cache = (self.ptr, index)
            self._batch_cache = cache
        return cache[1]

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of ``p4`` (and ``x``)."""
        return self.p4.dtype

    @property
    def device(self) -> torch.device:
        """Device of all tensors of the batch."""
        return self.p4.device

    def __len__(self) -> int:
        return self.num_jets

    def __getattr__(self, name: str) -> Tensor:
        # Only called when normal lookup fails; reads through __dict__ so that copying and
        # unpickling (which probe attributes before __init__ state exists) cannot recurse.
        fields = self.__dict__.get("fields")
        if fields is not None and not name.startswith("__") and name in fields:
            return fields[name]
        raise AttributeError(
            f"'JetBatch' object has no attribute or jet-level field {name!r}"
            + (f" (fields: {sorted(fields)})" if fields else "")
        )

    def __repr__(self) -> str:
        c = "None" if self.x is None else str(self.x.shape[1])
        dtype = str(self.dtype).removeprefix("torch.")
        device = "" if self.device.type == "cpu" else f", device={self.device}"
        return (
            f"JetBatch(jets={self.num_jets}, particles={self.num_particles}, x={c}, "
            f"fields=[{', '.join(self.fields)}], dtype={dtype}{device})"
        )

    # ------------------------------------------------------------------ indexing and moves

    def __getitem__(self, index: int | slice | Sequence[int] | Sequence[bool] | Tensor) -> JetBatch:
        """Select jets: an int (negative counts from the end), a slice, a bool mask of length B,
        or a list/array/tensor of jet indices (repeats and negatives allowed), giving a
        JetBatch of those jets in that order. Contiguous slices share memory with ``self``.

        Raises:
            IndexError: an index out of range, or a bool mask whose length is not B.
            TypeError: an index of an unsupported type (a float, a tuple, ...).
        """
        num_jets = self.num_jets
        if isinstance(index, slice):
            start, stop, step = index.indices(num_jets)
            if step == 1:
                return self._slice(start, max(start, stop))
            return self._select(torch.arange(start, stop, step, device=self.device))
        if isinstance(index, bool):
            raise TypeError(
                "JetBatch index: a bool is not a jet index; use a bool mask of length B"
            )
        if isinstance(index, (int, np.integer)):
            i = operator.index(index)
            if not -num_jets <= i < num_jets:
                raise IndexError(
                    f"JetBatch index {i} is out of range for a batch of {num_jets} jets"
                )
            i %= num_jets
            return self._slice(i, i + 1)
        if isinstance(index, str):
            raise TypeError(
                f"JetBatch index: a string is not a jet index; read jet-level field {index!r} "
                f"as jets.fields[{index!r}] or jets.{index}"
            )
        if isinstance(index, tuple):
            raise TypeError(
                "JetBatch index: a tuple is not supported; select jets with a list of indices "
                "(jets[[0, 2]]), a bool mask or a slice"
            )
        if not isinstance(index, (Tensor, Sequence, np.ndarray, range)):
            raise TypeError(
                f"JetBatch index: expected an int, slice, bool mask or index list/tensor, "
                f"found {type(index).__name__}"
            )
        idx = torch.as_tensor(index, device=self.device)
        if idx.numel() == 0 and idx.dtype != torch.bool:
            idx = idx.long()
        if idx.dtype == torch.bool:
            if idx.shape != (num_jets,):
                raise IndexError(
                    f"JetBatch bool mask must have shape ({num_jets},), found {tuple(idx.shape)}"
                )
            return self._select(idx.nonzero().squeeze(1))
        if idx.is_floating_point() or idx.is_complex():
            raise TypeError(f"JetBatch index tensor must be integer or bool, found {idx.dtype}")
        if idx.ndim == 0:
            return self[int(idx)]
        if idx.ndim != 1:
            raise IndexError(f"JetBatch index tensor must be 1-D, found shape {tuple(idx.shape)}")
        idx = idx.long()
        if idx.numel() > 0:
            out_of_range = (idx < -num_jets) | (idx >= num_jets)
            if bool(out_of_range.any()):
                bad = int(idx[out_of_range][0])
                raise IndexError(
                    f"JetBatch index {bad} is out of range for a batch of {num_jets} jets"
                )
        return self._select(torch.where(idx < 0, idx + num_jets, idx))

    def _slice(self, start: int, stop: int) -> JetBatch:
        lo, hi = int(self.ptr[start]), int(self.ptr[stop])
        return self._trusted(
            self.p4[lo:hi],
            self.ptr[start : stop + 1] - lo,
            None if self.x is None else self.x[lo:hi],
            None if self.label is None else self.label[start:stop],
            {k: v[start:stop] for k, v in self.fields.items()},
        )

    def _select(self, idx: Tensor) -> JetBatch:
        counts = self.counts[idx]
        ptr = torch.zeros(idx.shape[0] + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        num_particles = int(ptr[-1])
        # particle k of the output is particle k - ptr_out[j] + ptr_in[idx[j]] of the input
        shift = torch.repeat_interleave(
            self.ptr[:-1][idx] - ptr[:-1], counts, output_size=num_particles
        )
        particles = torch.arange(num_particles, device=self.device) + shift
        return self._trusted(
            self.p4[particles],
            ptr,
            None if self.x is None else self.x[particles],
            None if self.label is None else self.label[idx],
            {k: v[idx] for k, v in self.fields.items()},
        )

    def to(
        self,
        device: torch.device | str | torch.dtype | None = None,
        dtype: torch.dtype | None = None,
        *,
        non_blocking: bool = False,
    ) -> JetBatch:
        """Move the batch to ``device`` and/or cast its floating-point data to ``dtype``.

        ``dtype`` applies to ``p4``, ``x`` and the floating-point jet-level fields; ``ptr``,
        ``label`` and integer or bool fields keep their dtype. ``jets.to(torch.float64)``
        (a dtype as first argument) works like :meth:`torch.Tensor.to`.

        Raises:
            ValueError: ``dtype`` is not a floating-point dtype, or casting to it makes a
                momentum or feature non-finite (overflow).
        """
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise ValueError(
                    f"JetBatch.to: got two dtypes ({device} and dtype={dtype}); pass one"
                )
            device, dtype = None, device
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(
                f"JetBatch.to: dtype must be a floating-point dtype (it applies to p4 and x), "
                f"found {dtype}"
            )
        if device is None and dtype is None:
            return self

        def cast(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype, non_blocking=non_blocking)

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, non_blocking=non_blocking)

        parts = (
            cast(self.p4),
            move(self.ptr),
            None if self.x is None else cast(self.x),
            None if self.label is None else move(self.label),
            {k: cast(v) if v.is_floating_point() else move(v) for k, v in self.fields.items()},
        )
        if dtype is not None and dtype != self.dtype:
            return self._build(*parts, where="JetBatch.to")
        return self._trusted(*parts)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_counts(
        cls,
        p4: Tensor,
        counts: Tensor | Sequence[int],
        *,
        x: Tensor | None = None,
        label: Tensor | None = None,
        fields: Mapping[str, Tensor] | None = None,
    ) -> JetBatch:
        """Build a batch from packed particles and the number of particles of each jet.

        Args:
            p4: ``(P, 4)`` four-momenta, jets back to back.
            counts: ``(B,)`` nonnegative integers summing to ``P`` (tensor or list).
            x, label, fields: as in :class:`JetBatch`.
        """
        where = "JetBatch.from_counts"
        device = p4.device if isinstance(p4, Tensor) else None
        counts_t = torch.as_tensor(counts, device=device)
        if counts_t.numel() == 0:
            counts_t = counts_t.long()
        if counts_t.ndim != 1 or counts_t.is_floating_point() or counts_t.dtype == torch.bool:
            raise ValueError(
                f"{where}: counts must be a 1-D integer tensor or list of jet sizes, "
                f"found shape {tuple(counts_t.shape)} and dtype {counts_t.dtype}"
            )
        if counts_t.numel() > 0 and bool((counts_t < 0).any()):
            j = int((counts_t < 0).nonzero()[0, 0])
            raise ValueError(
                f"{where}: counts must be nonnegative, found counts[{j}] = {int(counts_t[j])}"
            )
        if isinstance(p4, Tensor) and p4.ndim >= 1 and int(counts_t.sum()) != p4.shape[0]:
            raise ValueError(
                f"{where}: counts sum to {int(counts_t.sum())} particles but p4 has "
                f"{p4.shape[0]} rows"
            )
        return cls._build(p4, _ptr_from_counts(counts_t), x, label, fields, where=where)

    @classmethod
    def collate(cls, items: Sequence[JetBatch | Mapping[str, Any]]) -> JetBatch:
        """Concatenate jets and batches into one batch, in order.

        Each item is a :class:`JetBatch` or a dict describing one jet: ``"p4"`` ``(n, 4)``,
        optional ``"x"`` ``(n, C)``, optional ``"label"`` (a scalar), and any other key a
        jet-level field (a tensor of any shape, or a number). All items must carry the same
        optional parts and field names, and ``p4`` of one dtype. Suitable as the
        ``collate_fn`` of a :class:`torch.utils.data.DataLoader`.

        Raises:
            ValueError: an empty list, or items that disagree (naming the first item that
                differs from item 0).
        """
        where = "JetBatch.collate"
        if isinstance(items, (JetBatch, Mapping)):
            raise ValueError(
                f"{where}: expected a list of JetBatch objects or jet dicts, found a single "
                f"{type(items).__name__}; wrap it in a list"
            )
        items = list(items)
        if not items:
            raise ValueError(
                f"{where}: expected a non-empty list of JetBatch objects or jet dicts, found an "
                f"empty list (a JetBatch needs at least one item to know its dtype and fields)"
            )
        p4s: list[Tensor] = []
        sizes: list[int] = []
        xs: list[Tensor] = []
        labels: list[Tensor] = []
        columns: dict[str, list[Tensor]] = {}
        reference: tuple[bool, bool, list[str]] | None = None
        for i, item in enumerate(items):
            if isinstance(item, JetBatch):
                p4, x, label, fields = item.p4, item.x, item.label, item.fields
                sizes.extend(item.counts.tolist())
            elif isinstance(item, Mapping):
                p4, x, label, fields = _unpack_jet_dict(item, i, where)
                sizes.append(p4.shape[0])
            else:
                raise ValueError(
                    f"{where}: item {i} must be a JetBatch or a dict with key 'p4', "
                    f"found {type(item).__name__}"
                )
            layout = (x is not None, label is not None, sorted(fields))
            if reference is None:
                reference = layout
            elif layout != reference:
                raise ValueError(
                    f"{where}: item {i} has x={layout[0]}, label={layout[1]}, "
                    f"fields={layout[2]} but item 0 has x={reference[0]}, "
                    f"label={reference[1]}, fields={reference[2]}; all items must match"
                )
            if p4s and p4.dtype != p4s[0].dtype:
                raise ValueError(
                    f"{where}: item {i} has p4 dtype {p4.dtype} but item 0 has "
                    f"{p4s[0].dtype}; convert with .to(dtype=...) first"
                )
            if x is not None and xs and x.shape[1] != xs[0].shape[1]:
                raise ValueError(
                    f"{where}: item {i} has x with {x.shape[1]} columns but item 0 has "
                    f"{xs[0].shape[1]}"
                )
            p4s.append(p4)
            if x is not None:
                xs.append(x)
            if label is not None:
                labels.append(label)
            for key, value in fields.items():
                columns.setdefault(key, []).append(value)
        counts = torch.tensor(sizes, dtype=torch.int64, device=p4s[0].device)
        return cls._build(
            torch.cat(p4s),
            _ptr_from_counts(counts),
            torch.cat(xs) if xs else None,
            torch.cat(labels) if labels else None,
            {key: torch.cat(values) for key, values in columns.items()},
            where=where,
        )

    # ------------------------------------------------------------------ padded view

    def to_padded(
        self, max_particles: int | None = None, *, truncate: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Padded view: each jet's particles first in its row, then zeros.

        Args:
            max_particles: row length ``N``; ``None`` = the longest jet (0 if all are
                empty). Longer than the longest jet pads further.
            truncate: allow ``max_particles`` below the longest jet, keeping the first
                ``max_particles`` particles of each jet (the mask then no longer round-trips).

        Returns:
            ``(p4 (B, N, 4), x (B, N, C) or None, mask (B, N) bool)``, ``True`` = real.

        Raises:
            ValueError: ``max_particles`` negative, or smaller than the longest jet
                without ``truncate=True``.
        """
        counts = self.counts
        longest = int(counts.max()) if self.num_jets > 0 else 0
        if max_particles is None:
            n = longest
        else:
            n = operator.index(max_particles)
            if n < 0:
                raise ValueError(f"to_padded: max_particles must be >= 0, found {n}")
            if n < longest and not truncate:
                jet = int(counts.argmax())
                raise ValueError(
                    f"to_padded: max_particles={n} is smaller than the longest jet "
                    f"(jet {jet} has {longest} particles); pass a larger max_particles, or "
                    f"truncate=True to keep the first {n} particles of each jet"
                )
        positions = torch.arange(n, device=self.device)
        mask = positions < counts.unsqueeze(1)
        if n < longest:
            # position of each particle inside its jet; the kept ones fill mask row-major
            keep = torch.arange(self.num_particles, device=self.device) < (
                self.ptr[:-1][self.batch] + n
            )
            p4, x = self.p4[keep], None if self.x is None else self.x[keep]
        else:
            p4, x = self.p4, self.x
        p4_padded = self.p4.new_zeros(self.num_jets, n, 4)
        p4_padded[mask] = p4
        x_padded = None
        if x is not None:
            x_padded = x.new_zeros(self.num_jets, n, x.shape[1])
            x_padded[mask] = x
        return p4_padded, x_padded, mask

    @classmethod
    def from_padded(
        cls,
        p4: Tensor,
        mask: Tensor,
        *,
        x: Tensor | None = None,
        label: Tensor | None = None,
        fields: Mapping[str, Tensor] | None = None,
    ) -> JetBatch:
        """Build a batch from a padded view.

        The real particles of each row are gathered in row order wherever they sit, so a
        mask with gaps (real particles after padding) is accepted; values under ``False``
        are ignored (they may even be NaN). :meth:`to_padded` returns the inverse exactly
        when the real particles come first in each row.

        Args:
            p4: ``(B, N, 4)`` floating point.
            mask: ``(B, N)`` bool, ``True`` = real particle.
            x: ``(B, N, C)`` with the dtype of ``p4``, or ``None``.
            label, fields: as in :class:`JetBatch`.
        """
        where = "JetBatch.from_padded"
        if not isinstance(p4, Tensor) or p4.ndim != 3 or p4.shape[2] != 4:
            raise ValueError(
                f"{where}: p4 must be a tensor of shape (B, N, 4), found {_describe(p4)}"
            )
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise ValueError(
                f"{where}: mask must be a bool tensor (True = real particle), found "
                + (f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__)
            )
        if mask.shape != p4.shape[:2]:
            raise ValueError(
                f"{where}: mask must have shape (B, N) = {tuple(p4.shape[:2])} like p4, "
                f"found {tuple(mask.shape)}"
            )
        if x is not None and (
            not isinstance(x, Tensor) or x.ndim != 3 or x.shape[:2] != p4.shape[:2]
        ):
            raise ValueError(
                f"{where}: x must have shape (B, N, C) with (B, N) = {tuple(p4.shape[:2])} "
                f"like p4, found {_describe(x)}"
            )
        mask = mask.to(p4.device)
        return cls._build(
            p4[mask],
            _ptr_from_counts(mask.sum(dim=1)),
            None if x is None else x[mask],
            label,
            fields,
            where=where,
        )

    # ------------------------------------------------------------------ PyTorch Geometric

    def to_pyg(self) -> Batch:
        """Convert to a ``torch_geometric.data.Batch`` with one graph (no edges) per jet.

        Node attributes ``p4`` and ``x``; graph attributes ``y`` (the label) and each field
        under its own name; ``batch`` and ``ptr`` as PyG defines them. The result equals
        ``Batch.from_data_list`` of one ``Data`` per jet (``to_data_list`` and
        ``get_example`` work, empty jets included) but is built without a per-jet loop.

        Raises:
            ValueError: a field name PyG reserves (``y``, ``num_nodes``) or treats as an
                edge index (containing ``"index"``, or ``"face"``).
        """
        from torch_geometric.data import Batch

        for name in self.fields:
            if name in _PYG_ATTRIBUTES or "index" in name or name == "face":
                raise ValueError(
                    f"to_pyg: jet-level field {name!r} clashes with an attribute that PyTorch "
                    f"Geometric reserves or treats as an edge index (y, num_nodes, *index*, "
                    f"face); rename the field"
                )
        num_jets = self.num_jets
        graph_slices = torch.arange(num_jets + 1, device=self.device)
        node = {"p4": self.p4} | ({} if self.x is None else {"x": self.x})
        graph = ({} if self.label is None else {"y": self.label}) | self.fields
        out = Batch()
        for key, value in (node | graph).items():
            out[key] = value
        out["batch"] = self.batch
        out["ptr"] = self.ptr
        out["num_nodes"] = self.num_particles
        # The bookkeeping Batch.from_data_list leaves behind, so that PyG can split the
        # batch back into graphs; the attribute names are those of PyG's collate().
        out._store._num_nodes = self.counts.tolist()
        out._num_graphs = num_jets
        out._slice_dict = {k: self.ptr for k in node} | {k: graph_slices for k in graph}
        out._inc_dict = {
            k: torch.zeros(num_jets, dtype=torch.int64, device=self.device) for k in node | graph
        }
        return out

    @classmethod
    def from_pyg(cls, batch: Any) -> JetBatch:
        """Build a batch from a ``torch_geometric`` ``Batch`` (or a single ``Data`` = one jet).

        Reads ``p4`` (required) and ``x`` as node attributes, ``y`` as the label and every
        other attribute as a jet-level field with first dim B. Jets are delimited by
        ``batch.ptr``, else by the sorted ``batch.batch`` vector; empty graphs are kept.

        Raises:
            ValueError: no ``p4``, a ``batch`` vector that is not sorted, or an attribute that
                is not a jet-level tensor (e.g. ``edge_index``), besides the checks of
                :class:`JetBatch`.
        """
        where = "JetBatch.from_pyg"
        # to_dict keeps insertion order (keys() does not); "_"-keys are PyG bookkeeping
        if not hasattr(batch, "to_dict"):
            raise ValueError(
                f"{where}: expected a torch_geometric Batch or Data, found {type(batch).__name__}"
            )
        keys = [k for k in batch.to_dict() if not k.startswith("_")]
        if "p4" not in keys:
            raise ValueError(
                f"{where}: expected a torch_geometric Data/Batch with a node attribute 'p4' "
                f"(P, 4), found attributes {sorted(keys)}"
            )
        p4 = batch["p4"]
        if "ptr" in keys:
            ptr = batch["ptr"]
        elif "batch" in keys:
            index = batch["batch"]
            if index.numel() > 1 and bool((index.diff() < 0).any()):
                raise ValueError(f"{where}: batch.batch must be sorted (jets contiguous)")
            num_graphs = getattr(batch, "num_graphs", None)
            if num_graphs is None:
                num_graphs = int(index.max()) + 1 if index.numel() else 0
            ptr = _ptr_from_counts(torch.bincount(index, minlength=num_graphs))
        else:
            ptr = torch.tensor([0, p4.shape[0]], dtype=torch.int64, device=p4.device)
        fields: dict[str, Tensor] = {}
        for key in keys:
            if key in _PYG_ATTRIBUTES:
                continue
            value = batch[key]
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"{where}: attribute {key!r} is a {type(value).__name__}; JetBatch keeps "
                    f"only tensors (p4, x, y and jet-level fields)"
                )
            if value.ndim == 0 and "ptr" not in keys and "batch" not in keys:
                value = value.unsqueeze(0)
            if value.ndim == 0 or value.shape[0] != ptr.shape[0] - 1:
                raise ValueError(
                    f"{where}: attribute {key!r} has shape {tuple(value.shape)}; besides p4, x "
                    f"and y JetBatch keeps only jet-level attributes with first dim "
                    f"B={ptr.shape[0] - 1} (edges and other node attributes are not kept)"
                )
            fields[key] = value
        label = batch["y"] if "y" in keys else None
        if label is not None and label.ndim == 0:
            label = label.unsqueeze(0)
        x = batch["x"] if "x" in keys else None
        return cls._build(p4, ptr, x, label, fields, where=where)

    # ------------------------------------------------------------------ awkward

    def to_awkward(self) -> ak.Array:
        """Convert to an awkward Array of B jet records in the canonical layout.

        Fields: ``part_energy``, ``part_px``, ``part_py``, ``part_pz`` (var * float),
        ``part_x`` (var * C * float) if ``x`` is set, ``label`` if set, then the jet-level
        fields under their own names (``(B,)`` -> scalars, ``(B, 4)`` -> ``4 * float``).
        Dtypes are kept; data is copied to the CPU.
        """
        import awkward as ak

        offsets = ak.index.Index64(_numpy(self.ptr, "ptr", "to_awkward"))
        p4 = _numpy(self.p4, "p4", "to_awkward")
        contents: dict[str, ak.contents.Content] = {
            name: ak.contents.ListOffsetArray(
                offsets, ak.contents.NumpyArray(np.ascontiguousarray(p4[:, i]))
            )
            for i, name in enumerate(MOMENTUM_FIELDS)
        }
        if self.x is not None:
            contents[X_FIELD] = ak.contents.ListOffsetArray(
                offsets, ak.contents.NumpyArray(_numpy(self.x, "x", "to_awkward"))
            )
        jet_level = ({} if self.label is None else {"label": self.label}) | self.fields
        for name, value in jet_level.items():
            if name in contents:
                raise ValueError(
                    f"to_awkward: jet-level field {name!r} clashes with a per-particle field "
                    f"of the canonical layout; rename it"
                )
            contents[name] = ak.contents.NumpyArray(_numpy(value, name, "to_awkward"))
        record = ak.contents.RecordArray(
            list(contents.values()), list(contents), length=self.num_jets
        )
        return ak.Array(record)

    @classmethod
    def from_awkward(
        cls,
        array: ak.Array,
        *,
        x_fields: Sequence[str] | None = None,
        label_field: str | None = "label",
        jet_fields: Sequence[str] | None = None,
    ) -> JetBatch:
        """Build a batch from an awkward Array of jet records in the canonical layout.

        Args:
            array: B records with jagged ``part_energy``, ``part_px``, ``part_py``,
                ``part_pz`` of one float dtype (kept exactly).
            x_fields: per-particle fields stacked, in order, as the columns of ``x``
                (``var * float`` gives one column, ``var * k * float`` gives k), cast to the
                dtype of the momenta. ``None`` = ``part_x`` if present, else no ``x``;
                ``[]`` = no ``x``. Other ``part_*`` fields are not read.
            label_field: field holding the label (dtype kept); ``None``, or a name that is
                absent, gives no label.
            jet_fields: fields to keep as jet-level fields (each regular, e.g. ``float`` or
                ``4 * float``). ``None`` = every field not starting with ``part_`` other
                than ``label_field``.

        Raises:
            ValueError: not a record array, missing or non-jagged momentum fields, per-particle
                fields whose jet sizes disagree, missing values, non-numeric or jagged
                jet-level fields, besides the checks of :class:`JetBatch`.
        """
        import awkward as ak

        where = "JetBatch.from_awkward"
        if not isinstance(array, ak.Array) or not ak.fields(array):
            raise ValueError(
                f"{where}: expected an awkward Array of jet records with fields "
                f"{list(MOMENTUM_FIELDS)}, found {_describe_awkward(array)}"
            )
        available = ak.fields(array)
        missing = [name for name in MOMENTUM_FIELDS if name not in available]
        if missing:
            raise ValueError(
                f"{where}: array has no field(s) {missing}; the canonical layout needs "
                f"{list(MOMENTUM_FIELDS)} (found fields {available})"
            )
        counts = _jet_sizes(array, MOMENTUM_FIELDS[0], where)
        columns = [_particle_column(array, name, counts, where) for name in MOMENTUM_FIELDS]
        for name, column in zip(MOMENTUM_FIELDS, columns, strict=True):
            if column.ndim != 1:
                raise ValueError(
                    f"{where}: field {name!r} must hold one number per particle (var * float), "
                    f"found type {array[name].type.content}"
                )
            if column.dtype != columns[0].dtype:
                raise ValueError(
                    f"{where}: momentum fields must share one dtype; {MOMENTUM_FIELDS[0]!r} is "
                    f"{columns[0].dtype} but {name!r} is {column.dtype}"
                )
        p4 = torch.stack(columns, dim=1)
        names = (
            list(x_fields) if x_fields is not None else ([X_FIELD] if X_FIELD in available else [])
        )
        x = None
        if names:
            x_columns = []
            for name in names:
                if name not in available:
                    raise ValueError(
                        f"{where}: x_fields names {name!r}, which is not a field of the array "
                        f"(found fields {available})"
                    )
                column = _particle_column(array, name, counts, where)
                width = math.prod(column.shape[1:])
                x_columns.append(column.reshape(column.shape[0], width).to(p4.dtype))
            x = torch.cat(x_columns, dim=1)
        label = None
        if label_field is not None and label_field in available:
            label = _jet_column(array, label_field, where)
        if jet_fields is None:
            jet_fields = [
                name for name in available if not name.startswith("part_") and name != label_field
            ]
        fields = {}
        for name in jet_fields:
            if name not in available:
                raise ValueError(
                    f"{where}: jet_fields names {name!r}, which is not a field of the array "
                    f"(found fields {available})"
                )
            fields[name] = _jet_column(array, name, where)
        ptr = _ptr_from_counts(torch.from_numpy(counts))
        return cls._build(p4, ptr, x, label, fields, where=where)


# ---------------------------------------------------------------------- helpers


def _ptr_from_counts(counts: Tensor) -> Tensor:
    ptr = torch.zeros(counts.shape[0] + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} ({value.dtype})"
    return type(value).__name__


def _as_field_dict(fields: Mapping[str, Tensor] | None, where: str) -> dict[str, Tensor]:
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise ValueError(
            f"{where}: fields must be a dict of jet-level tensors, found {type(fields).__name__}"
        )
    return dict(fields)


def _validate(
    p4: Any,
    ptr: Any,
    x: Any,
    label: Any,
    fields: dict[str, Any],
    *,
    where: str,
) -> None:
    if not isinstance(p4, Tensor) or p4.ndim != 2 or p4.shape[1] != 4:
        raise ValueError(
            f"{where}: p4 must be a tensor of shape (P, 4) holding (E, px, py, pz), "
            f"found {_describe(p4)}"
        )
    if not p4.is_floating_point():
        raise ValueError(
            f"{where}: p4 must have a floating-point dtype (float32 or float64), found {p4.dtype}"
        )
    num_particles = p4.shape[0]
    if not isinstance(ptr, Tensor) or ptr.ndim != 1 or ptr.dtype != torch.int64:
        raise ValueError(
            f"{where}: ptr must be a 1-D int64 tensor of B+1 offsets, found {_describe(ptr)}"
        )
    if ptr.numel() == 0:
        raise ValueError(f"{where}: ptr must have B+1 >= 1 entries (ptr[0] = 0), found none")
    if ptr.device != p4.device:
        raise ValueError(f"{where}: ptr is on {ptr.device} but p4 is on {p4.device}")
    if int(ptr[0]) != 0:
        raise ValueError(f"{where}: ptr[0] must be 0, found {int(ptr[0])}")
    steps = ptr.diff()
    if steps.numel() > 0 and bool((steps < 0).any()):
        j = int((steps < 0).nonzero()[0, 0])
        raise ValueError(
            f"{where}: ptr must be nondecreasing, found ptr[{j}] = {int(ptr[j])} > "
            f"ptr[{j + 1}] = {int(ptr[j + 1])}"
        )
    if int(ptr[-1]) != num_particles:
        raise ValueError(
            f"{where}: ptr[-1] must equal the number of particles P = {num_particles} "
            f"(rows of p4), found {int(ptr[-1])}"
        )
    num_jets = ptr.shape[0] - 1
    _check_finite(p4, "p4", ptr, where)
    if x is not None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] != num_particles:
            raise ValueError(
                f"{where}: x must be a tensor of shape (P, C) with P = {num_particles} like p4, "
                f"found {_describe(x)}"
            )
        if x.dtype != p4.dtype:
            raise ValueError(f"{where}: x must have the dtype of p4 ({p4.dtype}), found {x.dtype}")
        if x.device != p4.device:
            raise ValueError(f"{where}: x is on {x.device} but p4 is on {p4.device}")
        _check_finite(x, "x", ptr, where)
    if label is not None:
        if not isinstance(label, Tensor) or label.ndim != 1 or label.shape[0] != num_jets:
            raise ValueError(
                f"{where}: label must be a 1-D tensor with one entry per jet (B = {num_jets}), "
                f"found {_describe(label)}"
            )
        if label.device != p4.device:
            raise ValueError(f"{where}: label is on {label.device} but p4 is on {p4.device}")
    for name, value in fields.items():
        if not isinstance(name, str):
            raise ValueError(f"{where}: field names must be strings, found {name!r}")
        if name in _INSTANCE_ATTRIBUTES or hasattr(JetBatch, name):
            raise ValueError(
                f"{where}: field name {name!r} is an attribute of JetBatch; rename the field"
            )
        if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != num_jets:
            raise ValueError(
                f"{where}: field {name!r} must be a tensor with first dim B = {num_jets}, "
                f"found {_describe(value)}"
            )
        if value.device != p4.device:
            raise ValueError(
                f"{where}: field {name!r} is on {value.device} but p4 is on {p4.device}"
            )


def _check_finite(values: Tensor, name: str, ptr: Tensor, where: str) -> None:
    if bool(torch.isfinite(values).all()):
        return
    bad = ~torch.isfinite(values)
    num_bad = int(bad.sum())
    if num_bad:
        rows = bad.any(dim=1).nonzero()
        particle = int(rows[0, 0])
        jet = int((ptr[1:] <= particle).sum())
        raise ValueError(
            f"{where}: {name} must be finite, found {num_bad} non-finite value(s) in "
            f"{rows.shape[0]} particle(s); the first is particle {particle} (jet {jet}): "
            f"{values[particle].tolist()}"
        )


def _unpack_jet_dict(
    item: Mapping[str, Any], i: int, where: str
) -> tuple[Tensor, Tensor | None, Tensor | None, dict[str, Tensor]]:
    if "p4" not in item:
        raise ValueError(f"{where}: item {i} has no key 'p4' (found keys {sorted(item)})")
    p4 = torch.as_tensor(item["p4"])
    if p4.ndim != 2 or p4.shape[1] != 4:
        raise ValueError(f"{where}: item {i} 'p4' must have shape (n, 4), found {tuple(p4.shape)}")
    x = None
    if item.get("x") is not None:
        x = torch.as_tensor(item["x"], device=p4.device)
        if x.ndim != 2 or x.shape[0] != p4.shape[0]:
            raise ValueError(
                f"{where}: item {i} 'x' must have shape (n, C) with n = {p4.shape[0]} like "
                f"'p4', found {tuple(x.shape)}"
            )
    label = None
    if item.get("label") is not None:
        label = torch.as_tensor(item["label"], device=p4.device)
        if label.ndim != 0:
            raise ValueError(
                f"{where}: item {i} 'label' must be a scalar, found shape {tuple(label.shape)}"
            )
        label = label.unsqueeze(0)
    fields = {
        key: torch.as_tensor(value, device=p4.device).unsqueeze(0)
        for key, value in item.items()
        if key not in ("p4", "x", "label")
    }
    return p4, x, label, fields


def _numpy(values: Tensor, name: str, where: str) -> np.ndarray:
    try:
        return values.detach().cpu().numpy().copy()
    except TypeError as err:
        raise ValueError(
            f"{where}: {name} has dtype {values.dtype}, which NumPy/awkward cannot hold; "
            f"convert it first (e.g. .to(torch.float32))"
        ) from err


def _describe_awkward(array: Any) -> str:
    type_ = getattr(array, "type", None)
    return f"type {type_}" if type_ is not None else type(array).__name__


def _jet_sizes(array: ak.Array, name: str, where: str) -> np.ndarray:
    import awkward as ak

    try:
        return np.asarray(ak.to_numpy(ak.num(array[name], axis=1)), dtype=np.int64)
    except (ValueError, TypeError, np.exceptions.AxisError) as err:
        raise ValueError(
            f"{where}: field {name!r} must be a jagged list per jet (var * ...), found type "
            f"{array[name].type.content}"
        ) from err


def _flat_numbers(values: ak.Array, name: str, where: str) -> Tensor:
    import awkward as ak

    try:
        flat = ak.to_numpy(ak.to_regular(values, axis=None), allow_missing=False)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{where}: field {name!r} must be numbers with regular inner dimensions and no "
            f"missing values, found type {values.type.content} ({err})"
        ) from err
    if flat.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: field {name!r} must be numeric (bool, int or float), found {flat.dtype}"
        )
    return torch.from_numpy(np.array(flat))


def _particle_column(array: ak.Array, name: str, counts: np.ndarray, where: str) -> Tensor:
    import awkward as ak

    sizes = _jet_sizes(array, name, where)
    if not np.array_equal(sizes, counts):
        j = int(np.flatnonzero(sizes != counts)[0])
        raise ValueError(
            f"{where}: per-particle field {name!r} has {sizes[j]} entries in jet {j} but "
            f"{MOMENTUM_FIELDS[0]!r} has {counts[j]}; all part_* fields must match"
        )
    return _flat_numbers(ak.flatten(array[name], axis=1), name, where)


def _jet_column(array: ak.Array, name: str, where: str) -> Tensor:
    return _flat_numbers(array[name], name, where)
