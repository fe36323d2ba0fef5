"""ParticleNet and LorentzNet speed with each implementation alone in a fresh process.

``speed.py`` measures all implementations of a row in one process (interleaved rounds), so
they share the allocator's state: a baseline that allocates large tensors leaves glibc's
heap grown and its mmap threshold raised, and whatever runs next gets warm memory instead
of fresh pages that fault. A user's process usually runs one model. This script starts one
process per (model, implementation, batch size), measures inference and a training step
there (same jets, weights and timing as ``speed.py``), repeats the whole set ``--repeats``
times in alternation and reports the median over the repeats and the ratios::

    python benchmarks/fresh_process.py --batch-sizes 8,64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed

IMPLEMENTATIONS = {
    "particlenet": ("jettag", "weaver"),
    "lorentznet": ("jettag", "edge-list"),
}


def _particlenet(impl: str, size: int, seed: int):
    from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet

    from jettag.hub.weaver import to_weaver_state_dict
    from jettag.models.particlenet import ParticleNetInputs, particlenet

    torch.manual_seed(seed)
    model = particlenet(input_dims=7).eval()
    speed._randomise_batchnorm(model)
    pool, _ = speed.generated_jets(512, seed)
    jets = speed.batches(pool, size, 1)[0]
    with torch.no_grad():
        points, features = ParticleNetInputs("top-tagging:kin")(jets)
    if impl == "jettag":
        return model, partial(model.forward_tensors, points, features, jets.ptr)
    weaver = WeaverParticleNet(7, 2, conv_params=model.block_params, fc_params=model.fc_params,
                               use_fusion=False, use_fts_bn=True).eval()
    weaver.load_state_dict(to_weaver_state_dict(model))
    pp, mask = speed.padded(points, jets.ptr)
    ff, _ = speed.padded(features, jets.ptr)
    return weaver, partial(weaver, pp.transpose(1, 2).contiguous(),
                           ff.transpose(1, 2).contiguous(), mask.unsqueeze(1).to(ff.dtype))


def _lorentznet(impl: str, size: int, seed: int):
    from jettag.models.lorentznet import lorentznet

    torch.manual_seed(seed)
    model = lorentznet().eval()
    speed._randomise_batchnorm(model)
    pool, _ = speed.generated_jets(512, seed)
    jets = speed.batches(pool, size, 1)[0]
    with torch.no_grad():
        scalars, x, ptr = model.inputs(jets)
    if impl == "jettag":
        return model, partial(model.forward_tensors, scalars, x, ptr)
    xs, mask = speed.padded(x, ptr)
    ss, _ = speed.padded(scalars, ptr)
    return model, partial(speed.EdgeListLorentzNet(model), ss, xs, mask)


def child(name: str, impl: str, size: int, seed: int, min_time: float) -> dict[str, float]:
    """Inference and training-step jets/s of one implementation (this process only)."""
    net, forward = (_particlenet if name == "particlenet" else _lorentznet)(impl, size, seed)
    device = torch.device("cpu")
    timing = partial(speed.measure_time, device=device, min_time=min_time, max_reps=100,
                     min_reps=3)
    with torch.no_grad():
        infer = size / timing(forward)["median_s"]
    labels = torch.arange(size) % 2
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(forward(), labels).backward()
        opt.step()

    return {"inference": infer, "train": size / timing(step)["median_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="8,64",
                        help="comma-separated batch sizes (default 8,64; training at batch 1 "
                        "is not measured by speed.py either)")
    parser.add_argument("--models", default="particlenet,lorentznet")
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes per implementation and batch size (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "IMPL", "BATCH"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        name, impl, size = args.child
        print(json.dumps(child(name, impl, int(size), args.seed, args.min_time)))
        return 0
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(IMPLEMENTATIONS))
    if unknown:
        parser.error(f"--models: expected names among {', '.join(IMPLEMENTATIONS)}, found "
                     f"{', '.join(unknown)}")
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    runs: dict[str, list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for size in sizes:
            for name in models:
                for impl in IMPLEMENTATIONS[name]:
                    cmd = [sys.executable, __file__, "--child", name, impl, str(size),
                           "--threads", str(args.threads), "--seed", str(args.seed),
                           "--min-time", str(args.min_time)]
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        print(done.stderr, file=sys.stderr)
                        raise SystemExit(f"fresh_process.py: the child {name}/{impl} at batch "
                                         f"{size} failed (exit {done.returncode})")
                    res = json.loads(done.stdout.strip().splitlines()[-1])
                    runs.setdefault(f"{name}/{impl}/{size}", []).append(res)
                    print(f"[{repeat + 1}/{args.repeats}] {name} {impl} batch {size}: "
                          f"inference {res['inference']:.1f} jets/s, training "
                          f"{res['train']:.1f} jets/s", flush=True)
    print(f"\nCommand: `python benchmarks/fresh_process.py {' '.join(argv or sys.argv[1:])}`")
    print("Median over the processes (jets/s); ratio jettag / baseline.\n")
    print("| model | batch | jettag infer | baseline infer | ratio | jettag train | "
          "baseline train | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for name in models:
        ours, base = IMPLEMENTATIONS[name]
        for size in sizes:
            med = {impl: {mode: statistics.median(r[mode] for r in runs[f"{name}/{impl}/{size}"])
                          for mode in ("inference", "train")} for impl in (ours, base)}
            summary[f"{name}/{size}"] = med
            print(f"| {name} (vs {base}) | {size} | {med[ours]['inference']:.1f} | "
                  f"{med[base]['inference']:.1f} | "
                  f"{med[ours]['inference'] / med[base]['inference']:.2f} | "
                  f"{med[ours]['train']:.1f} | {med[base]['train']:.1f} | "
                  f"{med[ours]['train'] / med[base]['train']:.2f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"runs": runs, "median": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
