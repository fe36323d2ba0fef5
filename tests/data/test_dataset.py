"""Torch datasets: sharding over ranks and workers, shuffling, batching, random access."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jettag.data import JetBatch
from jettag.data.dataset import IterableJetDataset, JetDataset, collate_jets
from jettag.data.formats import ParquetReader, write_parquet
from jettag.data.formats._synthetic import random_jets

pytest.importorskip("pyarrow")

SIZES = (37, 101, 12)  # uneven files
N = sum(SIZES)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("jets")
    paths = []
    for k, n in enumerate(SIZES):
        jets = random_jets(n, seed=10 + k, num_classes=3, max_particles=12).to_awkward()
        paths.append(write_parquet(root / f"part_{k}.parquet", [jets[: n // 2], jets[n // 2 :]]))
    return paths


def ids_of(items) -> list[int]:
    out: list[int] = []
    for item in items:
        jet_id = item["jet_id"] if isinstance(item, dict) else item.fields["jet_id"]
        out.extend(torch.as_tensor(jet_id).reshape(-1).tolist())
    return out


def shard_ids(ds, epoch, world_size, num_workers):
    return {
        (r, w): ids_of(
            ds.iter_shard(
                epoch, rank=r, world_size=world_size, worker_id=w, num_workers=num_workers
            )
        )
        for r in range(world_size)
        for w in range(num_workers)
    }


@pytest.mark.parametrize(
    ("world_size", "num_workers", "batch_size"),
    [(2, 2, None), (2, 2, 8), (3, 1, 16), (1, 3, None), (4, 3, 5)],
)
def test_every_jet_exactly_once_per_epoch(files, world_size, num_workers, batch_size):
    ds = IterableJetDataset(
        files, shuffle=True, seed=7, chunk_size=10, buffer_size=24, batch_size=batch_size,
        index_field="jet_id",
    )  # fmt: skip
    for epoch in (0, 1):
        shards = shard_ids(ds, epoch, world_size, num_workers)
        everything = [i for ids in shards.values() for i in ids]
        assert sorted(everything) == list(range(N))  # once each, none skipped
        per_rank = [sum(len(shards[r, w]) for w in range(num_workers)) for r in range(world_size)]
        assert max(per_rank) - min(per_rank) <= 1


def test_ids_are_the_jets_they_name(files):
    ds = IterableJetDataset(files, shuffle=True, chunk_size=16, index_field="jet_id", dtype=None)
    reader = ParquetReader(files, dtype=None)
    whole = reader.read_batch()
    for item in ds.iter_shard(0):
        i = int(item["jet_id"])
        a, b = int(whole.ptr[i]), int(whole.ptr[i + 1])
        assert torch.equal(item["p4"], whole.p4[a:b])
        assert int(item["label"]) == int(whole.label[i])


def test_epochs_shuffle_differently_and_seeds_reproduce(files):
    def order(seed, epoch):
        ds = IterableJetDataset(files, shuffle=True, seed=seed, chunk_size=8, index_field="jet_id")
        return ids_of(ds.iter_shard(epoch, rank=0, world_size=2, worker_id=1, num_workers=2))

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)
    ds = IterableJetDataset(files, shuffle=True, seed=3, chunk_size=8, index_field="jet_id")
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert ids_of(ds.iter_shard(rank=0, world_size=2, worker_id=1, num_workers=2)) == order(3, 1)
    ordered = IterableJetDataset(files, index_field="jet_id")
    assert ids_of(ordered) == list(range(N))  # no shuffle: file order


def test_shuffle_mixes_files(files):
    ds = IterableJetDataset(
        files, shuffle=True, chunk_size=8, buffer_size=64, batch_size=32, index_field="jet_id"
    )
    first = next(iter(ds))
    cum = np.cumsum(SIZES)
    sources = set(np.searchsorted(cum, first.fields["jet_id"].numpy(), side="right").tolist())
    assert len(sources) >= 2


@pytest.mark.parametrize("world_size", [2, 4, 7])
def test_drop_last_and_even(files, world_size):
    common = {"shuffle": True, "chunk_size": 9, "buffer_size": 20, "index_field": "jet_id"}
    dropped = IterableJetDataset(files, drop_last=True, **common)
    shards = shard_ids(dropped, 2, world_size, 2)
    per_rank = [len(shards[r, 0]) + len(shards[r, 1]) for r in range(world_size)]
    assert per_rank == [N // world_size] * world_size
    everything = [i for ids in shards.values() for i in ids]
    assert len(set(everything)) == len(everything) == world_size * (N // world_size)

    padded = IterableJetDataset(files, even=True, **common)
    shards = shard_ids(padded, 2, world_size, 2)
    per_rank = [len(shards[r, 0]) + len(shards[r, 1]) for r in range(world_size)]
    q = -(-N // world_size)
    assert per_rank == [q] * world_size
    counts = Counter(i for ids in shards.values() for i in ids)
    assert set(counts) == set(range(N))
    assert sum(c - 1 for c in counts.values()) == q * world_size - N
    assert padded.num_jets(0, world_size) == q


@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_batch_counts_do_not_depend_on_workers(files, num_workers):
    ds = IterableJetDataset(
        files, batch_size=16, shuffle=True, drop_last=True, rank=1, world_size=2
    )
    assert len(ds) == -(-(N // 2) // 16)
    batches = [
        b
        for w in range(num_workers)
        for b in ds.iter_shard(0, rank=1, world_size=2, worker_id=w, num_workers=num_workers)
    ]
    assert len(batches) == len(ds)
    assert all(isinstance(b, JetBatch) for b in batches)
    assert sorted(len(b) for b in batches)[1:] == [16] * (len(batches) - 1)


def test_dataloader_workers_and_ranks(files):
    seen = {0: [], 1: []}
    for rank in (0, 1):
        ds = IterableJetDataset(
            files, batch_size=8, shuffle=True, seed=1, chunk_size=10, rank=rank, world_size=2,
            index_field="jet_id",
        )  # fmt: skip
        loader = DataLoader(
            ds, batch_size=None, num_workers=2, collate_fn=collate_jets, persistent_workers=True
        )
        for epoch in (0, 1):
            ds.set_epoch(epoch)  # reaches the persistent workers through shared memory
            seen[epoch].extend(ids_of(list(loader)))
            if rank == 0:
                seen.setdefault(f"rank0-{epoch}", ids_of(list(loader)))
    assert sorted(seen[0]) == list(range(N))
    assert sorted(seen[1]) == list(range(N))
    assert seen["rank0-0"] != seen["rank0-1"]


def test_jet_mode_with_dataloader_collate(files):
    ds = IterableJetDataset(files, shuffle=True, index_field="jet_id")
    batches = list(DataLoader(ds, batch_size=10, num_workers=2, collate_fn=collate_jets))
    assert all(isinstance(b, JetBatch) for b in batches)
    assert sorted(ids_of(batches)) == list(range(N))


def test_rank_from_torch_distributed(files, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    ds = IterableJetDataset(files, drop_last=True, index_field="jet_id")
    ids = ids_of(ds)
    assert len(ids) == N // 3 and len(ds) == N // 3
    assert ids == list(range(N // 3, 2 * (N // 3)))  # unshuffled: the second third


def test_options_are_validated(files):
    with pytest.raises(ValueError, match="exclusive"):
        IterableJetDataset(files, drop_last=True, even=True)
    with pytest.raises(ValueError, match="both rank and world_size"):
        IterableJetDataset(files, rank=1)
    with pytest.raises(ValueError, match="out of range"):
        IterableJetDataset(files, rank=2, world_size=2)


def test_map_style_dataset(files):
    ds = JetDataset(
        files, chunk_size=16, cache_chunks=4, index_field="jet_id", x_fields=["part_pid"]
    )
    assert len(ds) == N
    reader = ParquetReader(files)
    for i in (0, 36, 37, 100, N - 1):
        item = ds[i]
        ref = reader.read_batch(i, i + 1, x_fields=["part_pid"])
        assert torch.equal(item["p4"], ref.p4) and torch.equal(item["x"], ref.x)
        assert int(item["label"]) == int(ref.label[0]) and int(item["jet_id"]) == i
    loader = DataLoader(ds, batch_size=13, shuffle=True, collate_fn=collate_jets)
    batches = list(loader)
    assert sorted(ids_of(batches)) == list(range(N))
    b = batches[0]
    order = b.fields["jet_id"].tolist()
    ref = JetBatch.collate([reader.read_batch(i, i + 1, x_fields=["part_pid"]) for i in order])
    assert torch.equal(b.p4, ref.p4) and torch.equal(b.ptr, ref.ptr) and torch.equal(b.x, ref.x)
    assert len(ds._cache) <= 4


def test_forked_workers_reopen_files(tmp_path):
    """Handles opened in the parent (by len()) are not shared with forked workers."""
    from jettag.data.formats import JetClassReader, write_jetclass_root

    jets = random_jets(300, seed=9, num_classes=10).to_awkward()
    path = write_jetclass_root(tmp_path / "w.root", [jets[a : a + 50] for a in range(0, 300, 50)])
    reader = JetClassReader(path)
    whole = reader.read_batch()  # the parent now holds an open file
    ds = JetDataset(reader, chunk_size=75, index_field="jet_id")
    loader = DataLoader(ds, batch_size=25, num_workers=2, collate_fn=collate_jets)
    for batch in loader:
        ids = batch.fields["jet_id"]
        assert torch.equal(batch.label, whole.label[ids])
        assert torch.equal(batch.p4, whole[ids].p4)
