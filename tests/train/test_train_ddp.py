"""Two CPU processes under torchrun (gloo) train exactly like one process with the same
global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_helpers import TinyDeepSets, ToyJets, single_thread

from jettag.train import TrainConfig, fit, load_checkpoint

HERE = Path(__file__).resolve().parent

# The same entry point serves both runs: `fit` starts the process group itself under torchrun.
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from pathlib import Path
from _train_helpers import TinyDeepSets, ToyJets
from jettag.train import TrainConfig, fit
torch.set_num_threads(1)
config = TrainConfig(**json.loads(sys.argv[3]))
torch.manual_seed(0)
model = TinyDeepSets(hidden=12)
fit(model, ToyJets(64, seed=1, dtype=torch.float64), ToyJets(31, seed=2, dtype=torch.float64),
    config, out_dir=Path(sys.argv[2]))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(batch_size: int) -> dict:
    return {
        "epochs": 2,
        "batch_size": batch_size,
        "lr": 5e-3,
        "weight_decay": 0.01,
        "schedule": "one-cycle",
        "grad_clip": 1.0,
        "dtype": "float64",
        "progress": False,
        "seed": 3,
        "checkpoint_every": 3,
    }


def test_two_processes_match_one_process_with_same_global_batch(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "--no-python",
            sys.executable,
            "-c",
            SCRIPT,
            str(HERE),
            str(tmp_path / "ddp"),
            json.dumps(_config(batch_size=8)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    torch.manual_seed(0)
    model = TinyDeepSets(hidden=12)
    with single_thread():
        single = fit(
            model,
            ToyJets(64, seed=1, dtype=torch.float64),
            ToyJets(31, seed=2, dtype=torch.float64),
            TrainConfig(**_config(batch_size=16)),
            out_dir=tmp_path / "single",
        )

    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp["world_size"] == 2 and ddp["global_step"] == 8  # 2 epochs x 64 / (2 x 8)
    assert len(ddp["ranks"]) == 2
    one = model.state_dict()
    torch.manual_seed(0)
    initial = TinyDeepSets(hidden=12).double().state_dict()
    assert all((one[k] - initial[k]).abs().max() > 1e-3 for k in one)  # training moved them
    for key, value in ddp["model"].items():
        torch.testing.assert_close(value, one[key], rtol=0, atol=1e-10, msg=key)
    # the validation set (31 jets, uneven over 2 ranks) is gathered in full
    rows = [
        json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    ]
    for ddp_row, one_row in zip(rows, single.history, strict=True):
        assert ddp_row["val_num_jets"] == one_row["val_num_jets"] == 31
        for key in ("train_loss", "train_accuracy", "val_loss", "val_auc", "lr"):
            assert ddp_row[key] == pytest.approx(one_row[key], rel=1e-9, abs=1e-12), key
