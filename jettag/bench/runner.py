"""The benchmark loop: data once, the baseline, every (tagger, seed) trained and tested."""

from __future__ import annotations

import datetime as _dt
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jettag.bench.baselines import BASELINES, evaluate_baseline
from jettag.bench.data import (
    SPLITS,
    TASK_RECIPES,
    InMemoryJets,
    find_splits,
    generated_splits,
    split_seed,
)
from jettag.data.formats import JetChunk, open_dataset

__all__ = [
    "DEFAULT_MODELS",
    "DISPLAY_NAMES",
    "METRICS",
    "PRESETS",
    "PRESET_MODELS",
    "TASK_METRICS",
    "TASK_MODELS",
    "Budget",
    "acceptance_check",
    "resolve_models",
    "run_benchmark",
]

#: The default selection: the taggers that train in minutes on two CPU cores. ParticleNet
#: (366k parameters, about 25 times the training cost of ParticleNet-Lite per jet) and
#: LorentzNet (a fully connected graph per jet) are left out; add them with ``--models``.
DEFAULT_MODELS: tuple[str, ...] = ("particlenet-lite", "pfn", "efn", "rpcn", "rpcn-irc")

#: Table names of the registry names.
DISPLAY_NAMES: dict[str, str] = {
    "particlenet": "ParticleNet",
    "particlenet-lite": "ParticleNet-Lite",
    "pfn": "PFN",
    "efn": "EFN",
    "rpcn": "rPCN",
    "rpcn-irc": "IRC-safe rPCN",
    "lorentznet": "LorentzNet",
    "track-pfn": "PFN (tracks)",
    "vector-pfn": "Vector PFN",
    "tensor-pfn": "Tensor PFN",
}

#: Default taggers of the tasks that have their own (the b-taggers read track fields that
#: only the b-tagging data has); the others use :data:`DEFAULT_MODELS`.
TASK_MODELS: dict[str, tuple[str, ...]] = {"btag": ("track-pfn", "vector-pfn", "tensor-pfn")}

#: Metrics of the results table (keys of :func:`jettag.metrics.summary`).
METRICS: tuple[str, ...] = ("accuracy", "auc", "rejection@0.5", "rejection@0.3")
#: ... of the tasks whose rejections are at other signal efficiencies.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "btag": ("accuracy", "auc", "rejection@0.7", "rejection@0.85"),
}


@dataclass(frozen=True)
class Budget:
    """How much a benchmark trains: jets per split (both classes together, balanced),
    epochs per run and training seeds per tagger."""

    train_jets: int
    val_jets: int
    test_jets: int
    epochs: int
    seeds: int = 1

    def __post_init__(self) -> None:
        for name in ("train_jets", "val_jets", "test_jets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 2, "
                                 f"found {value!r}")
        for name in ("epochs", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name}: expected a positive integer, found {value!r}")


#: Budgets per task. ``default`` takes about 15 minutes on two quiet CPU cores, generation
#: included: measured for top tagging, 750 CPU-seconds of training and testing with one
#: torch thread plus about 470 CPU-seconds of generation (two workers, about 4 minutes; the
#: quark/gluon recipe generates about 5 times fewer jets per second, hence its smaller
#: default). ``acceptance`` is the issue's check (20k training jets); ``tiny`` is for smoke
#: tests.
PRESETS: dict[str, dict[str, Budget]] = {
    "top": {
        "tiny": Budget(400, 200, 400, epochs=1),
        "default": Budget(10_000, 2_000, 6_000, epochs=6),
        "acceptance": Budget(20_000, 4_000, 10_000, epochs=10),
        "large": Budget(100_000, 20_000, 50_000, epochs=20, seeds=3),
    },
    "qg": {
        "tiny": Budget(400, 200, 400, epochs=1),
        "default": Budget(6_000, 1_000, 3_000, epochs=6),
        "acceptance": Budget(20_000, 4_000, 10_000, epochs=10),
        "large": Budget(100_000, 20_000, 50_000, epochs=20, seeds=3),
    },
    # b-tagging: the generator makes about 60 jets per CPU-second, so ``default`` (44k jets)
    # costs about 12 CPU-minutes of generation, and the training steps of the three
    # b-taggers over three seeds about 11 CPU-minutes with one torch thread (0.11, 0.94 and
    # 2.53 CPU-ms per jet and step for the PFN, Vector and Tensor PFN; measured numbers in
    # benchmarks/README.md). 20k test jets (10k light): at 70% b-efficiency the
    # light rejection of these jets reaches thousands, so even R70 on 10k light jets rests
    # on a few of them.
    "btag": {
        "tiny": Budget(200, 100, 200, epochs=1),
        "default": Budget(20_000, 4_000, 20_000, epochs=3, seeds=3),
        "acceptance": Budget(20_000, 4_000, 20_000, epochs=3, seeds=3),
        "large": Budget(100_000, 20_000, 50_000, epochs=10, seeds=3),
    },
}

#: Models each preset selects (``None``: :data:`DEFAULT_MODELS` that are available).
PRESET_MODELS: dict[str, tuple[str, ...] | None] = {
    "tiny": ("pfn", "efn"),
    "default": None,
    "acceptance": None,
    "large": None,
}

_TITLES = {"top": "Top tagging", "qg": "Quark/gluon tagging", "btag": "b-tagging"}
#: A tagger "clearly" beats the baseline when its AUC is higher by more than this many
#: combined standard deviations ...
ACCEPTANCE_SIGMAS = 3.0
#: ... or, without uncertainties (``bootstrap=0`` and one seed), by this much.
ACCEPTANCE_AUC_MARGIN = 0.01
#: AUC ParticleNet-Lite must reach on generated top jets (the issue's acceptance).
ACCEPTANCE_PNLITE_AUC = 0.95


# ---------------------------------------------------------------------- models


def resolve_models(task: str, models: Sequence[str] | str | None) -> list[str]:
    """The taggers to run: ``None``/``"default"`` gives :data:`DEFAULT_MODELS` that are
    available, ``"all"`` every model with a shipped configuration for ``task``, otherwise
    the comma-separated names (each must have a configuration for ``task``).

    Raises:
        ValueError: an unknown name or a model without configuration, listing the valid ones.
    """
    import jettag.models
    from jettag.configs import available_configs

    configured = [m for m, t in available_configs() if t == task]
    usable = [m for m in configured if m in jettag.models.available()]
    if models is None or models == "default":
        return [m for m in TASK_MODELS.get(task, DEFAULT_MODELS) if m in usable]
    if models == "all":
        return usable
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models)]
    names = [m for m in names if m]
    if not names:
        raise ValueError("--models: no model given; use e.g. --models pfn,efn")
    bad = [m for m in names if m not in usable]
    if bad:
        raise ValueError(
            f"--models: {bad} cannot be benchmarked on task {task!r}; models with a shipped "
            f"configuration for it: {', '.join(usable)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--models: {names} lists a model twice")
    return names


# ---------------------------------------------------------------------- data


def _load_data(
    task: str,
    budget: Budget,
    *,
    data_dir: str | os.PathLike[str] | None,
    data_seed: int,
    workers: int | None,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[dict[str, JetChunk], dict[str, Any]]:
    sizes = {"train": budget.train_jets, "val": budget.val_jets, "test": budget.test_jets}
    start = time.perf_counter()
    if data_dir is None:
        log(f"data: generating (or reading from the cache) {sizes} jets with the "
            f"{TASK_RECIPES[task]!r} recipe")
        paths = generated_splits(task, sizes, seed=data_seed, workers=workers,
                                 data_dir=cache_dir, progress=progress)
        files = {s: [paths[s]] for s in SPLITS}
        info: dict[str, Any] = {
            "source": "generated",
            "recipe": TASK_RECIPES[task],
            "data_card": f"generated-{TASK_RECIPES[task]}",
            "seeds": {s: split_seed(data_seed, s) for s in SPLITS},
        }
    else:
        files = find_splits(data_dir)
        info = {"source": "directory", "directory": str(Path(data_dir).expanduser())}
    generation = time.perf_counter() - start
    chunks: dict[str, JetChunk] = {}
    for split in SPLITS:
        reader = open_dataset(files[split])
        available = len(reader)
        wanted = sizes[split]
        if available < wanted and data_dir is not None:
            log(f"data: {split} split has {available} jets, fewer than the {wanted} asked for; "
                f"using all of them")
        chunks[split] = reader.read_chunk(0, min(wanted, available))
        reader.close()
        labels = chunks[split].label
        if labels is None or len(np.unique(labels)) != 2:
            raise ValueError(
                f"{files[split]}: the {split} jets must carry labels of both classes, found "
                f"{None if labels is None else np.unique(labels).tolist()}"
            )
    info.update({
        "files": {s: [str(p) for p in files[s]] for s in SPLITS},
        "jets": {s: len(chunks[s]) for s in SPLITS},
        "signal_jets": {s: int(chunks[s].label.sum()) for s in SPLITS},  # type: ignore[union-attr]
        "preparation_time_s": round(generation, 1),
    })
    return chunks, info


# ---------------------------------------------------------------------- one run


def _train_one(
    name: str,
    task: str,
    seed: int,
    chunks: dict[str, JetChunk],
    *,
    budget: Budget,
    overrides: Sequence[str],
    data_info: dict[str, Any],
    out: Path,
    bootstrap: int,
    progress: bool,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Train, test and score one (tagger, seed); ``wrap`` replaces the built model (e.g. by
    another implementation with the same initial weights), ``label`` names its run
    directory (default: the tagger's name)."""
    from jettag.configs import load_config
    from jettag.metrics import summary
    from jettag.train import fit, load_weights, predict, seed_everything

    run = load_config(
        name, task,
        overrides=[f"train.epochs={budget.epochs}", f"train.seed={seed}",
                   f"train.progress={str(progress).lower()}", *overrides],
    )
    inputs = run.tagger_inputs()
    transform = inputs.prepare if (inputs.massless or inputs.max_particles) else None
    dtype = {"float32": torch.float32, "float64": torch.float64}[run.train.get("dtype",
                                                                               "float32")]
    datasets = {
        s: InMemoryJets(chunks[s], x_fields=inputs.x_fields, dtype=dtype, transform=transform)
        for s in SPLITS
    }
    extra = {"data_files": data_info["files"], "data_jets": data_info["jets"]}
    if label is not None:
        extra["implementation"] = label
    config = run.train_config(extra=extra)
    run_dir = out / "runs" / (label or name) / f"seed{seed}-{config.config_hash()[:8]}"
    seed_everything(seed)
    model = run.build_model()
    if wrap is not None:
        model = wrap(model)
    parameters = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    result = fit(model, datasets["train"], datasets["val"], config, out_dir=run_dir)
    fit_time = time.perf_counter() - started
    if result.best_checkpoint is not None:
        load_weights(model, result.best_checkpoint)
    batch_size = int(run.train.get("eval_batch_size") or 512)
    started = time.perf_counter()
    labels, probs = predict(model, datasets["test"], batch_size=batch_size, progress=progress)
    inference = time.perf_counter() - started
    metrics = summary(labels, probs, task, bootstrap=bootstrap, seed=seed)
    np.savez_compressed(run_dir / "test_scores.npz", labels=labels, probs=probs)
    train_time = sum(float(r.get("train_time", 0.0)) + float(r.get("val_time", 0.0))
                     for r in result.history)
    return {
        "seed": seed,
        "parameters": parameters,
        "metrics": metrics,
        "train_time_s": round(train_time, 2),
        "fit_wall_time_s": round(fit_time, 2),
        "inference_jets_per_s": round(len(labels) / inference, 1) if inference > 0 else None,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "out_dir": str(run_dir),
        "config": run.to_dict(),
        "_scores": (labels, probs[:, 1]),
    }


def _train_one_in_process(threads: int | None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`_train_one` in a worker process with ``threads`` torch threads."""
    if threads is not None:
        torch.set_num_threads(threads)
    return _train_one(*args, **kwargs)


def _resolve_jobs(jobs: int | None, runs: int) -> int:
    if jobs is None:
        jobs = os.cpu_count() or 1
    if jobs < 1:
        raise ValueError(f"--jobs: expected a positive number of processes, found {jobs}")
    return max(1, min(jobs, runs))


def _process_pool(jobs: int) -> ProcessPoolExecutor:
    # spawn, not fork: forking a process whose OpenMP thread pool has run can hang the child
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))


def _aggregate(runs: list[dict[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in metrics:
        values = np.array([r["metrics"][key] for r in runs], dtype=np.float64)
        boot = [r["metrics"].get(f"{key}_std") for r in runs]
        boot = [b for b in boot if b is not None and np.isfinite(b)]
        finite = bool(np.isfinite(values).all())
        out[key] = {
            "mean": float(values.mean()) if finite else float("inf"),
            "std": float(values.std(ddof=1)) if finite and len(values) > 1 else None,
            "bootstrap_std": float(np.mean(boot)) if boot else None,
            "values": values.tolist(),
        }
    for key in ("train_time_s", "inference_jets_per_s"):
        values = np.array([r[key] for r in runs if r[key] is not None], dtype=np.float64)
        out[key] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        }
    return out


def _auc_spread(summary: dict[str, Any], seeds: int) -> float | None:
    """Uncertainty of a tagger's AUC: the spread over seeds, else the bootstrap std."""
    value = summary["auc"]["std"] if seeds > 1 else summary["auc"]["bootstrap_std"]
    return None if value is None or not np.isfinite(value) else float(value)


def acceptance_check(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance criteria on a benchmark's results.

    - every tagger clearly beats the baseline: its AUC exceeds the baseline's by more than
      :data:`ACCEPTANCE_SIGMAS` combined standard deviations (the tagger's spread over
      seeds, or its bootstrap std with one seed, and the baseline's bootstrap std; without
      uncertainties, by :data:`ACCEPTANCE_AUC_MARGIN`);
    - on top tagging, ParticleNet-Lite reaches AUC :data:`ACCEPTANCE_PNLITE_AUC`;
    - at least 20k training jets.
    """
    base = results["baseline"]["metrics"]
    base_auc, base_std = base["auc"], base.get("auc_std")
    seeds = int(results["budget"]["seeds"])
    criteria = []
    for name, entry in results["models"].items():
        auc = entry["summary"]["auc"]["mean"]
        spread = _auc_spread(entry["summary"], seeds)
        if spread is not None and base_std is not None and np.isfinite(base_std):
            margin = ACCEPTANCE_SIGMAS * float(np.hypot(spread, base_std))
            how = f"{ACCEPTANCE_SIGMAS:g} sigma = {margin:.4f}"
        else:
            margin, how = ACCEPTANCE_AUC_MARGIN, f"{ACCEPTANCE_AUC_MARGIN:g}"
        criteria.append({
            "criterion": f"{DISPLAY_NAMES.get(name, name)} AUC > baseline AUC "
                         f"{base_auc:.4f} + {how}",
            "value": auc,
            "passed": bool(auc > base_auc + margin),
        })
    if results["task"] == "btag":
        from jettag.bench.btag import btag_criteria

        criteria += btag_criteria(results)
    if results["task"] == "top":
        entry = results["models"].get("particlenet-lite")
        auc = None if entry is None else entry["summary"]["auc"]["mean"]
        criteria.append({
            "criterion": f"ParticleNet-Lite AUC >= {ACCEPTANCE_PNLITE_AUC}",
            "value": auc,
            "passed": auc is not None and bool(auc >= ACCEPTANCE_PNLITE_AUC),
        })
    train_jets = results["data"]["jets"]["train"]
    criteria.append({
        "criterion": "at least 20000 training jets",
        "value": train_jets,
        "passed": bool(train_jets >= 20_000),
    })
    return {"passed": all(c["passed"] for c in criteria), "criteria": criteria}


# ---------------------------------------------------------------------- entry point


def run_benchmark(
    task: str,
    *,
    budget: Budget,
    out: str | os.PathLike[str],
    models: Sequence[str] | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    bootstrap: int = 100,
    overrides: Sequence[str] = (),
    check: bool = False,
    preset: str | None = None,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    jobs: int | None = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run a benchmark and write its report to ``out``.

    Trains every selected tagger over ``budget.seeds`` seeds on the same jets (generated
    with the task's recipe and a seed per split, or read from ``data_dir``), tests it, and
    writes ``results.json``, ``results.md``, ``roc.png`` and ``roc.pdf`` (see
    :mod:`jettag.bench.report`). Each run keeps its checkpoints and test scores under
    ``out/runs/<model>/seed<k>-<config hash>/``; running again with the same settings
    resumes (finished runs are not retrained).

    Args:
        task: ``"top"``, ``"qg"`` or ``"btag"`` (which also writes the cost table of
            :func:`jettag.bench.btag.cost_table`).
        budget: jets per split, epochs, seeds.
        out: output directory.
        models: see :func:`resolve_models`.
        data_dir: a dataset directory with train/val/test splits (see
            :func:`~jettag.bench.data.find_splits`) instead of generated jets.
        data_seed: base seed of the generated splits.
        workers: generator processes.
        cache_dir: generator cache directory.
        bootstrap: bootstrap replicates of the test metrics' uncertainties.
        overrides: ``section.key=value`` applied to every tagger's configuration (after
            the budget, so they win).
        check: evaluate :func:`acceptance_check` (a failed check is reported, not raised).
        preset: the preset's name, recorded.
        progress: progress bars and log lines.
        command: the command line, recorded (default: ``sys.argv``).
        log: where log lines go (default: print to stderr when ``progress``).
        jobs: trainings run at the same time, each in its own process (``None``: one per
            CPU, at most the number of runs). Results do not depend on it: every run is
            seeded; train times and inference rates are then measured side by side.
        threads: torch threads of each parallel process (default: torch's choice in the
            process; one thread per process is best when ``jobs`` equals the CPUs).

    Returns:
        The results (what ``results.json`` holds).
    """
    from jettag._version import __version__
    from jettag.bench.report import write_report

    if task not in TASK_RECIPES:
        raise ValueError(f"task: expected one of {sorted(TASK_RECIPES)}, found {task!r}")
    if bootstrap < 0:
        raise ValueError(f"--bootstrap: expected a number >= 0, found {bootstrap}")
    if log is None:
        def log(text: str) -> None:
            if progress:
                print(text, file=sys.stderr, flush=True)
    started = time.perf_counter()
    load_start = os.getloadavg()
    out = Path(out).expanduser()
    names = resolve_models(task, models)
    if not names:
        raise ValueError(f"no tagger to run for task {task!r}: none of {list(DEFAULT_MODELS)} "
                         f"is available; choose some with --models")
    log(f"benchmark {task}: taggers {', '.join(names)}; budget {asdict(budget)}")
    chunks, data_info = _load_data(task, budget, data_dir=data_dir, data_seed=data_seed,
                                   workers=workers, cache_dir=cache_dir, progress=progress,
                                   log=log)
    baseline = BASELINES[task]
    baseline_metrics, baseline_scores = evaluate_baseline(
        baseline, chunks["val"], chunks["test"], task, bootstrap=bootstrap, seed=0)
    log(f"baseline {baseline.label}: AUC {baseline_metrics['auc']:.4f}")
    total = len(names) * budget.seeds
    jobs = _resolve_jobs(jobs, total)
    models_out: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tasks = [(name, seed) for name in names for seed in range(budget.seeds)]
    kwargs = {"budget": budget, "overrides": overrides, "data_info": data_info, "out": out,
              "bootstrap": bootstrap}
    finished: dict[tuple[str, int], dict[str, Any]] = {}

    def done(k: int, name: str, seed: int, run: dict[str, Any]) -> None:
        finished[(name, seed)] = run
        log(f"[{k}/{total}] {name} seed {seed}: test AUC {run['metrics']['auc']:.4f}, "
            f"accuracy {run['metrics']['accuracy']:.4f}, trained in "
            f"{run['train_time_s']:.0f} s")

    if jobs == 1:
        for k, (name, seed) in enumerate(tasks, 1):
            log(f"[{k}/{total}] {name} seed {seed}: training on {len(chunks['train'])} jets "
                f"for {budget.epochs} epoch(s)")
            done(k, name, seed, _train_one(name, task, seed, chunks, progress=progress,
                                           **kwargs))
    else:
        log(f"running {total} trainings in {jobs} parallel processes of "
            f"{torch.get_num_threads() if threads is None else threads} torch thread(s) each "
            f"(per-run progress bars off)")
        done_count = 0
        with _process_pool(jobs) as pool:
            futures = {
                pool.submit(_train_one_in_process, threads, name, task, seed, chunks,
                            progress=False, **kwargs): (name, seed)
                for name, seed in tasks
            }
            for future in as_completed(futures):
                name, seed = futures[future]
                done_count += 1
                done(done_count, name, seed, future.result())
    for name in names:
        runs = [finished[(name, seed)] for seed in range(budget.seeds)]
        labels, scores = runs[0]["_scores"]
        curves[name] = (labels, scores)
        for run in runs:
            run.pop("_scores")
        models_out[name] = {
            "display_name": DISPLAY_NAMES.get(name, name),
            "parameters": runs[0]["parameters"],
            "config": runs[0]["config"],
            "runs": runs,
            "summary": _aggregate(runs, TASK_METRICS.get(task, METRICS)),
        }
    results: dict[str, Any] = {
        "benchmark": task,
        "title": f"{_TITLES[task]} benchmark",
        "command": command if command is not None else _command(),
        "argv": list(sys.argv),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "budget": asdict(budget),
        "bootstrap": bootstrap,
        "overrides": list(overrides),
        "data": data_info,
        "environment": {
            "jettag": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads() if jobs == 1 else threads,
            "parallel_runs": jobs,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "task": task,
        "baseline": {
            "name": baseline.name,
            "label": baseline.label,
            "description": baseline.description,
            "metrics": baseline_metrics,
        },
        "models": models_out,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    if task == "btag":
        from jettag.bench.btag import cost_table

        log("cost: timing the b-taggers and the e3nn comparison block on the test jets")
        results["cost"] = cost_table({n: models_out[n]["config"] for n in names},
                                     chunks["test"], display_names=DISPLAY_NAMES)
    results["check"] = acceptance_check(results) if check else None
    curves_all = {baseline.label: (chunks["test"].label, baseline_scores)}
    curves_all.update({DISPLAY_NAMES.get(n, n): c for n, c in curves.items()})
    write_report(results, out, curves_all)
    return results


def _command() -> str:
    import shlex

    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "jettag":
        argv[0] = "jettag"
    elif argv and Path(argv[0]).name == "__main__.py":
        argv[0:1] = ["python", "-m", "jettag.cli"]
    return shlex.join(argv)

