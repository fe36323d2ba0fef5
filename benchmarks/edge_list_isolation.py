"""Does running jettag's LorentzNet (shipped, or with compiled tiles) in a process change
the speed of the edge-list baseline measured after it in the same process?

Measures the edge-list LorentzNet of ``speed.py`` alone (fresh process), then after jettag's
shipped path (the native kernel), then after jettag's compiled tiles (native kernel off), on
the same batch of generated jets
(inference, jets/s, three 1-second measurements each)::

    python benchmarks/edge_list_isolation.py --batch-size 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed

from jettag.models.lorentznet import lorentznet
from jettag.ops import dispatch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pool, _ = speed.generated_jets(512, args.seed)
    torch.manual_seed(0)
    model = lorentznet().eval()
    speed._randomise_batchnorm(model)
    edge_list = speed.EdgeListLorentzNet(model)
    size = args.batch_size
    jets = speed.batches(pool, size, 1)[0]
    with torch.no_grad():
        scalars, x, ptr = model.inputs(jets)
    xs, mask = speed.padded(x, ptr)
    ss, _ = speed.padded(scalars, ptr)

    def rate(fn, seconds: float = 1.0) -> float:
        with torch.no_grad():
            fn()
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                fn()
                n += 1
        return round(n * size / (time.perf_counter() - start), 1)

    def edge() -> Tensor:
        return edge_list(ss, xs, mask)

    def ours() -> Tensor:
        return model.forward_tensors(scalars, x, ptr)

    print(f"batch {size}, {args.threads} threads (jets/s)")
    print("edge-list, fresh process   ", [rate(edge) for _ in range(3)], flush=True)
    print("jettag (native kernel)     ", [rate(ours) for _ in range(2)], flush=True)
    print("edge-list after it         ", [rate(edge) for _ in range(3)], flush=True)
    with speed.without_native(), dispatch.use_compiled_tiles():
        print("jettag compiled tiles      ", [rate(ours) for _ in range(2)], flush=True)
    print("edge-list after compiled   ", [rate(edge) for _ in range(3)], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
