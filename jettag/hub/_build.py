"""Build a zoo entry (weights + model card) from a finished training run.

A training run of ``jettag benchmark`` or ``jettag train`` leaves a directory with
``config.json`` (the training configuration, the model's ``create`` arguments, the input
preprocessing and the data files), ``best.pt`` (the selected checkpoint), ``metrics.jsonl``
(one line per epoch) and, for benchmark runs, ``test_scores.npz`` (labels and class
probabilities on the held-out test split). :func:`build_entry` turns it into a
:class:`~jettag.hub.Tagger` with a complete model card:

- the training data (data card, generator recipe, seed and file of each split, jets used),
  the recipe (optimiser, schedule, epochs, selected epoch, time) and the exact command;
- the metrics on the held-out test split, computed here from the run's test scores with
  bootstrap uncertainties (:func:`jettag.metrics.summary`);
- before writing, the rebuilt tagger re-scores the first test jets and must reproduce the
  stored test scores, so the card's metrics belong to the saved weights and preprocessing.

``benchmarks/build_zoo.py`` lists the package's entries and calls this for each.

Example:
    >>> from jettag.hub._build import build_entry                         # doctest: +SKIP
    >>> build_entry("results/benchmark-top/runs/pfn/seed0-e24c8297", name="top-pfn",
    ...             title="PFN top tagger", summary="...", intended_use="...",
    ...             limitations=["..."], command="jettag benchmark top")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jettag.hub.tagger import Tagger
from jettag.hub.zoo import ZOO_DIR, load_pretrained

__all__ = ["TASK_CLASSES", "build_entry", "run_metrics"]

#: Class names per task, in label order (label 1 is the signal of the binary tasks).
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "top": ("QCD", "top"),
    "qg": ("gluon", "quark"),
    "btag": ("light", "b"),
}

#: Standard limitation of every tagger trained on the generator's jets.
PARTICLE_LEVEL = (
    "trained and tested on particle-level Pythia 8 jets (no detector simulation, no pile-up); "
    "not calibrated on detector data: an analysis must measure its efficiencies and "
    "mistag rates in data"
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; expected a finished training run") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None


def run_metrics(
    run_dir: str | os.PathLike[str],
    task: str,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Metrics of a run on its held-out test split, from ``test_scores.npz``.

    Returns:
        ``(metrics, num_jets)``: card entries ``{"name", "value", "uncertainty",
        "description"}`` for accuracy, AUC and each rejection (one bootstrap standard
        deviation over ``bootstrap`` replicates), and the number of test jets.

    Raises:
        FileNotFoundError: the run has no ``test_scores.npz`` (not finished, or trained
            with ``jettag train``: evaluate it first).
    """
    from jettag.metrics import summary

    path = Path(run_dir) / "test_scores.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; the run has no held-out test scores yet (a benchmark run writes "
            "them when it finishes)"
        )
    with np.load(path) as data:
        labels, probs = data["labels"], data["probs"]
    values = summary(labels, probs, task, bootstrap=bootstrap, seed=seed)
    out = []
    for key, value in values.items():
        if key.endswith("_std") or key.startswith("num_"):
            continue
        std = values.get(f"{key}_std")
        if std is None or not math.isfinite(std) or not math.isfinite(value):
            continue
        if key.startswith("rejection@"):
            eff = float(key.split("@")[1])
            description = (f"1/eps_B at eps_S = {eff:g} (nearest ROC point); a bootstrap "
                           "replicate with no background jet passing gives no value")
        elif key == "auc":
            description = "area under the ROC curve of the signal probability"
        else:
            description = "fraction of jets whose most probable class is the true one"
        out.append({"name": key, "value": round(float(value), 6),
                    "uncertainty": round(float(std), 6),
                    "description": f"{description}; uncertainty: std over {bootstrap} "
                                   "bootstrap replicates of the test jets"})
    return out, len(labels)


def _data_section(files: Sequence[str], jets: int | None, split: str) -> dict[str, Any]:
    """Describe one split from its file and, for generated files, the generator's sidecar."""
    from jettag.data.cards import list_cards

    path = Path(files[0])
    resolved = path.resolve()
    sidecar = resolved.with_name(resolved.name + ".json")
    section: dict[str, Any] = {"file": resolved.name}
    if sidecar.is_file():
        meta = _read_json(sidecar)
        recipe = meta.get("recipe")
        card = f"generated-{recipe}"
        if card in list_cards():
            section["card"] = card
        section["generator_seed"] = meta.get("seed")
        section["description"] = (
            f"{split} split: jets generated here by jettag's {recipe!r} recipe (Pythia 8 + "
            f"FastJet, recipe version {meta.get('recipe_version')}) with seed "
            f"{meta.get('seed')}, {meta.get('n_jets_total')} jets in the file "
            f"{resolved.name} (classes {meta.get('classes')}, balanced), of which the "
            f"first {jets} were used; options {json.dumps(meta.get('options'), sort_keys=True)}"
        )
    else:
        section["description"] = f"{split} split: the first {jets} jets of {resolved.name}"
    return section


def _training_recipe(config: Mapping[str, Any], history: list[dict[str, Any]],
                     checkpoint: Mapping[str, Any]) -> list[str]:
    extra = config.get("extra", {})
    lines = [
        f"jettag {extra.get('model')} with model config "
        f"{json.dumps(extra.get('model_config'), sort_keys=True)}",
        f"input preprocessing {json.dumps(extra.get('data'), sort_keys=True)}",
        f"AdamW, lr {config.get('lr')}, betas {config.get('betas')}, weight decay "
        f"{config.get('weight_decay')}, schedule {config.get('schedule')}, batch size "
        f"{config.get('batch_size')}, {config.get('epochs')} epochs, dtype "
        f"{config.get('dtype')}, seed {config.get('seed')}",
    ]
    best = checkpoint.get("epoch")
    monitor = config.get("monitor")
    if history:
        seconds = sum(float(r.get("train_time", 0.0)) + float(r.get("val_time", 0.0))
                      for r in history)
        lines.append(
            f"weights: the checkpoint of epoch {best} (0-based) of {len(history)}, the best "
            f"validation {monitor}; {seconds / 60:.1f} min of training and validation in all"
        )
    return lines


def _benchmark_record(run_dir: Path) -> dict[str, Any] | None:
    """The ``results.json`` of the benchmark that made ``run_dir``, if it lists this run."""
    path = run_dir.parent.parent.parent / "results.json"
    if not path.is_file():
        return None
    record = _read_json(path)
    for model in record.get("models", {}).values():
        for run in model.get("runs", []):
            if Path(run.get("out_dir", "")).name == run_dir.name:
                return record
    return None


def build_entry(
    run_dir: str | os.PathLike[str],
    *,
    name: str,
    title: str,
    summary: str,
    intended_use: str | Sequence[str],
    limitations: Sequence[str],
    command: str | None = None,
    class_names: Sequence[str] | None = None,
    out_dir: str | os.PathLike[str] = ZOO_DIR,
    bootstrap: int = 1000,
    verify_jets: int = 256,
    notes: Sequence[str] = (),
) -> Path:
    """Write the zoo entry ``<out_dir>/<name>.{safetensors,yaml}`` of a finished run.

    Args:
        run_dir: the run directory (``config.json``, ``best.pt``, ``test_scores.npz``).
        name, title, summary: the card's identity.
        intended_use, limitations: the card's sections (the particle-level limitation
            :data:`PARTICLE_LEVEL` is added first).
        command: the exact command that trained the run; default: the ``command`` of the
            benchmark's ``results.json`` listing this run.
        class_names: the outputs' names (default :data:`TASK_CLASSES` of the run's task).
        out_dir: the zoo directory.
        bootstrap: bootstrap replicates of the metric uncertainties.
        verify_jets: test jets re-scored to check the stored test scores (0: skip).
        notes: further lines for the training recipe (e.g. the CPU budget).

    Returns:
        The weights file.

    Raises:
        FileNotFoundError: a file of the run is missing.
        ValueError: no command known, or the rebuilt tagger does not reproduce the run's
            test scores.
    """
    from jettag.models import create
    from jettag.train import load_weights

    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    extra = config.get("extra") or {}
    architecture, model_config = extra.get("model"), extra.get("model_config")
    task = extra.get("task") or config.get("task")
    if not isinstance(architecture, str) or not isinstance(model_config, Mapping):
        raise ValueError(f"{run_dir / 'config.json'}: expected extra.model and "
                         f"extra.model_config, found {sorted(extra)}")
    model = create(architecture, **model_config)
    checkpoint = load_weights(model, run_dir / "best.pt")
    model.eval()
    history = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    metrics, test_jets = run_metrics(run_dir, task, bootstrap=bootstrap, seed=0)
    classes = tuple(class_names or TASK_CLASSES[task])
    data = extra.get("data") or {}
    inputs = {k: data[k] for k in ("x_fields", "massless", "max_particles") if k in data}
    record = _benchmark_record(run_dir)
    if command is None:
        if record is None:
            raise ValueError(f"{run_dir}: no results.json lists this run; pass command=...")
        command = record["command"]
    files, jets = extra.get("data_files") or {}, extra.get("data_jets") or {}
    hardware = "CPU (torch CPU build), 1 torch thread"
    if record is not None:
        env = record.get("environment", {})
        hardware = (f"{env.get('cpu_count')}-core CPU shared with other jobs, "
                    f"{env.get('torch_threads')} torch thread(s), torch {env.get('torch')}; "
                    f"load average {env.get('load_average_start')} at the benchmark's start, "
                    f"{env.get('load_average_end')} at its end")
    card = {
        "schema_version": 1,
        "name": name,
        "title": title,
        "summary": summary,
        "training": {
            "data": _data_section(files["train"], jets.get("train"), "train"),
            "size": {"train": int(jets["train"]), "validation": int(jets["val"])},
            "recipe": [*_training_recipe(config, history, checkpoint), *notes],
            "command": command,
            "epochs": int(config.get("epochs")),
            "seed": int(config.get("seed", 0)),
            "hardware": hardware,
            "run": _display(run_dir),
        },
        "evaluation": {
            "data": _data_section(files["test"], test_jets, "test"),
            "split": "test",
            "size": test_jets,
            "metrics": metrics,
        },
        "intended_use": intended_use,
        "limitations": [PARTICLE_LEVEL, *limitations],
    }
    tagger = Tagger.from_model(model, architecture=architecture, config=model_config,
                               class_names=classes, signal=classes[1] if len(classes) == 2
                               else None, inputs=inputs, card=card)
    if verify_jets:
        _verify_scores(tagger, run_dir, files["test"], verify_jets)
    out_dir = Path(out_dir)
    path = tagger.save(out_dir / f"{name}.safetensors", overwrite=True)
    loaded = load_pretrained(name, directory=out_dir)
    assert not loaded.training
    return path


def _display(path: Path) -> str:
    relative = os.path.relpath(path.resolve())
    return str(path.resolve()) if relative.startswith("..") else relative


def _verify_scores(tagger: Tagger, run_dir: Path, test_files: Sequence[str], n: int) -> None:
    from jettag.data.formats import open_dataset

    with np.load(run_dir / "test_scores.npz") as data:
        stored = data["probs"]
    n = min(n, len(stored))
    with open_dataset(test_files) as reader:
        chunk = reader.read_chunk(0, n)
    batch = chunk.to_batch(x_fields=list(tagger.inputs.x_fields)).to(dtype=torch.float32)
    probs = tagger.predict(batch, device="cpu", batch_size=512).probabilities
    worst = float(np.nanmax(np.abs(probs - stored[:n])))
    if not worst <= 1e-3:
        raise ValueError(
            f"{run_dir}: the rebuilt tagger does not reproduce the run's test scores on the "
            f"first {n} test jets (largest difference {worst:.3g}); the weights, config or "
            "input preprocessing differ from the run's"
        )
