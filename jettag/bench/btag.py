r"""What the b-tagging benchmark adds to the common loop: its taggers, the light-jet rejection
criteria of issue 5, and the cost table next to the full-SO(3) e3nn block.

The benchmark (``jettag benchmark btag``) trains the track taggers of
:mod:`jettag.models.btag` (the PFN baseline on track features, the Vector PFN and the
Tensor PFN) on jets of the generator's ``b-tagging`` recipe, and reports AUC and the
light-jet rejection :math:`R_{70}, R_{85} = 1/\varepsilon_\mathrm{light}` at b-jet
efficiency 0.70 and 0.85 (mean ± standard deviation over seeds).

Cost table (:func:`cost_table`): the inference time per jet and the parameters of each
tagger, and of the same Tensor PFN with its bilinear products replaced by
:class:`~jettag.nn.so2.E3NNTensorBlock` (``model.product=e3nn``, every other option the
same, so the same widths); then the two product blocks alone, timed on the same per-track
features (those the first :math:`\Phi` layer of the Tensor PFN feeds its product). Each
number is the best of ``repeats`` passes over the same test jets in batches, in inference
mode, in this process (one torch thread when the benchmark runs with ``--threads 1``). The
e3nn tagger is timed, not trained: at the shipped Tensor PFN's widths (2F = 32) it has 28
times its parameters (2.5M against 91k) and a training step costs about 8 times as much per
jet (42 against 5.4 ms, measured side by side on one loaded core), beyond the benchmark's
budget.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from jettag.data.formats import JetChunk

__all__ = [
    "BTAG_MODELS",
    "BTAG_REFERENCE",
    "btag_criteria",
    "cost_table",
    "format_cost_table",
]

#: The b-taggers of the benchmark, in table order.
BTAG_MODELS: tuple[str, ...] = ("track-pfn", "vector-pfn", "tensor-pfn")
#: The tagger the equivariant ones must beat (the paper's PFN baseline on track features).
BTAG_REFERENCE = "track-pfn"
#: The rejections of the criteria (keys of :func:`jettag.metrics.summary`, task ``btag``).
_REJECTIONS = ("rejection@0.7", "rejection@0.85")


def _mean_and_error(summary: Mapping[str, Any], key: str) -> tuple[float, float | None]:
    """Mean over seeds and its standard error (``std / sqrt(seeds)``; None with one seed)."""
    entry = summary[key]
    values = [float(v) for v in entry["values"]]
    std = entry.get("std")
    if std is None or not math.isfinite(std) or len(values) < 2:
        return float(entry["mean"]), None
    return float(entry["mean"]), float(std) / math.sqrt(len(values))


def btag_criteria(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's b-tagging criteria: the Vector and Tensor PFN beat the PFN baseline
    (:data:`BTAG_REFERENCE`) in light-jet rejection at b-efficiency 0.70 and 0.85.

    A tagger beats it when its mean rejection over seeds is higher by more than the
    combined standard error of the two means (with one seed: when it is higher). Taggers
    that were not run give no criterion; without the reference, one failed criterion says
    so.
    """
    models = results["models"]
    if BTAG_REFERENCE not in models:
        return [{"criterion": f"the {BTAG_REFERENCE} baseline is run (--models)",
                 "value": None, "passed": False}]
    reference = models[BTAG_REFERENCE]
    criteria = []
    for name in ("vector-pfn", "tensor-pfn"):
        if name not in models:
            continue
        for key in _REJECTIONS:
            mean, error = _mean_and_error(models[name]["summary"], key)
            ref, ref_error = _mean_and_error(reference["summary"], key)
            margin = 0.0 if error is None or ref_error is None else math.hypot(error, ref_error)
            efficiency = key.split("@")[1]
            criteria.append({
                "criterion": f"{models[name]['display_name']} light rejection at b-efficiency "
                             f"{efficiency} > {reference['display_name']} {ref:.1f} + combined "
                             f"standard error {margin:.1f}",
                "value": mean,
                "passed": bool(math.isfinite(mean) and mean > ref + margin)
                if math.isfinite(ref) else False,
            })
    return criteria


# ---------------------------------------------------------------------- cost


def _batches(chunk: JetChunk, x_fields: Sequence[str], batch_size: int) -> list[Any]:
    from jettag.bench.data import InMemoryJets

    jets = InMemoryJets(chunk, x_fields=x_fields)
    return [jets.__getitems__(list(range(start, min(start + batch_size, len(chunk)))))
            for start in range(0, len(chunk), batch_size)]


def _best_time(fn: Any, inputs: Sequence[Any], repeats: int) -> float:
    """Best wall time of ``fn`` over all ``inputs``, of ``repeats`` passes after a warm-up."""
    with torch.inference_mode():
        fn(inputs[0])
        best = math.inf
        for _ in range(repeats):
            started = time.perf_counter()
            for x in inputs:
                fn(x)
            best = min(best, time.perf_counter() - started)
    return best


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cost_table(
    configs: Mapping[str, Mapping[str, Any]],
    test: JetChunk,
    *,
    jets: int = 2000,
    batch_size: int = 512,
    repeats: int = 3,
    display_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Inference cost per jet of the b-taggers next to the e3nn comparison block.

    Args:
        configs: ``{model name: run configuration dict}`` (``RunConfig.to_dict()``, as the
            benchmark records them) of the taggers to time; with ``"tensor-pfn"`` among
            them, also its e3nn variant and the two product blocks.
        test: the test jets; the first ``jets`` of them are timed.
        jets: how many jets.
        batch_size: jets per forward call.
        repeats: passes; the best is kept.
        display_names: table names of the model names.

    Returns:
        ``{"jets", "batch_size", "repeats", "torch_threads", "load_average", "rows"}``,
        each row ``{"name", "kind" ("tagger" or "block"), "parameters", "us_per_jet",
        "trained" (its accuracy is in the results table), "note"}``.
    """
    from jettag.configs import RunConfig
    from jettag.nn.so2 import E3NNTensorBlock, TensorBilinear

    if jets < 1 or batch_size < 1 or repeats < 1:
        raise ValueError(f"cost_table: jets, batch_size and repeats must be positive, found "
                         f"{jets}, {batch_size}, {repeats}")
    names = dict(display_names or {})
    chunk = test.slice(0, min(jets, len(test)))
    n = len(chunk)
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, module: torch.nn.Module, seconds: float, trained: bool,
            note: str) -> None:
        rows.append({"name": name, "kind": kind, "parameters": _parameters(module),
                     "us_per_jet": round(1e6 * seconds / n, 2), "trained": trained,
                     "note": note})

    for name, values in configs.items():
        run = RunConfig.from_dict(values, source=f"{name} configuration")
        batches = _batches(chunk, run.data["x_fields"], batch_size)
        model = run.build_model().eval()
        add(names.get(name, name), "tagger", model, _best_time(model, batches, repeats), True,
            "")
        if name != "tensor-pfn":
            continue
        e3nn_values = copy.deepcopy(dict(values))
        e3nn_values["model"] = {**e3nn_values["model"], "product": "e3nn"}
        e3nn_model = RunConfig.from_dict(e3nn_values, source="tensor-pfn + e3nn").build_model()
        add(f"{names.get(name, name)}, e3nn product", "tagger", e3nn_model.eval(),
            _best_time(e3nn_model, batches, repeats), False,
            "the Tensor PFN with E3NNTensorBlock in place of the bilinear products; timed, "
            "not trained")
        # the inputs of the products: the first Phi layer up to its product, track by track
        layer = model.phi[0]
        features = []
        with torch.inference_mode():
            for batch in batches:
                tracks = model.inputs(batch)
                x = layer.affine(*model.features(tracks))
                if layer.so2 is not None:
                    x = layer.so2(*x, tracks.jet_p4[tracks.batch, 1:])
                if layer.norm is not None:
                    x = layer.norm(*x)
                features.append(tuple(x))
        tracks_total = sum(int(f[0].shape[0]) for f in features)
        width = layer.hidden_channels
        note = (f"one product on the {tracks_total / n:.1f} tracks per jet of these jets, "
                f"input widths {width}")
        for label, block in (("TensorBilinear block", TensorBilinear(width)),
                             ("E3NNTensorBlock", E3NNTensorBlock(width))):
            add(label, "block", block, _best_time(lambda f, b=block: b(*f), features, repeats),
                False, note)
    return {
        "jets": n,
        "batch_size": batch_size,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in load],
        "rows": rows,
    }


def format_cost_table(cost: Mapping[str, Any]) -> str:
    """The Markdown cost table and a line on how it was measured."""
    lines = ["| Tagger / block | Params | Inference [µs/jet] | Accuracy in the table above |",
             "|---|---|---|---|"]
    for row in cost["rows"]:
        trained = "yes" if row["trained"] else ("cost only" if row["kind"] == "tagger" else "—")
        name = row["name"] + (f" ({row['note']})" if row["note"] else "")
        lines.append(f"| {name} | {row['parameters']:,} | {row['us_per_jet']:,.1f} | "
                     f"{trained} |")
    load = cost["load_average"]
    lines += ["", f"Best of {cost['repeats']} passes over {cost['jets']:,} test jets in batches "
              f"of {cost['batch_size']}, inference mode, {cost['torch_threads']} torch "
              f"thread(s), load average {load[0]} (1 min) when timing started; the times "
              f"scale with the machine's load, their ratios less so."]
    return "\n".join(lines)

