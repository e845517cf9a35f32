"""Several processes, one run: 2 gloo processes on the CPU score, train and resume as one process does."""

from __future__ import annotations

import json
import os
import runpy
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from initprune import distributed
from initprune.curvature import rademacher_probes
from initprune.data import TensorData, TensorLoader, load_dataset
from initprune.errors import InitpruneError
from initprune.experiments import build_config, run_experiment
from initprune.experiments import run as run_module
from initprune.models import create_model
from initprune.pruning import prune
from initprune.scores import score
from initprune.train import TrainConfig, train

from .conftest import randomize_bn, tiny_convnet
from .test_data import make_tiny
from .test_experiments import SMALL

WORLD = 2
CRITERIA = {
    "fisher_pruner": {},
    "hutch_pruner": {"probes": 3, "chunk_size": 2, "temperature": 1.0},
    "snip": {},
    "fisher_mc_pruner": {"samples": 2, "chunk_size": 2},
}
RUN = {**SMALL, "model": "lenet5", "model_options": {}, "criterion": "snip"}
RUN["dataset_options"] = {**SMALL["dataset_options"], "input_shape": [1, 28, 28], "train_size": 339}

# Two ranks and one process compute each step's float32 gradient in other orders (two parts and an
# all-reduce, one sum): a few ulps (~4 eps32) per step, which SGD momentum 0.9 carries for up to 10 steps,
# over the ~10 steps of these runs: 10 · 10 · 4 · eps32 ≈ 5e-5 relative to the weights. Measured on AVX-512:
# at most 8e-9 absolute (0.1 % of this tolerance); a wrong shard, loss weighting or mask is off by far more.
FLOAT32_STEPS_RTOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args, timeout: float = 120.0) -> None:
    """Run ``fn(rank, port, *args)`` in WORLD fresh processes that join one gloo group through the
    torchrun environment variables; fail (not hang) if one fails or they run past ``timeout``."""
    ctx = mp.start_processes(fn, args=(_free_port(), *args), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{fn.__name__} did not finish in {timeout:g} s")


def _join(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert distributed.is_distributed() and distributed.rank() == rank


# --------------------------------------------------------------------------------- scoring


def _scoring_setup():
    torch.manual_seed(0)
    model = tiny_convnet().double()
    randomize_bn(model, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 2, 6, 6, generator=g, dtype=torch.float64)  # 7 samples: parts of 3 and 4
    y = torch.randint(0, 3, (7,), generator=g)
    return model, [(x[:4], y[:4]), (x[4:], y[4:])]


def _scores_and_masks() -> dict:
    out = {}
    for name, options in CRITERIA.items():
        model, batches = _scoring_setup()
        scores = score(model, name, batches, seed=4, **options)
        mask = prune(model, name, batches, sparsity=0.6, seed=4, **options)
        out[name] = {"scores": scores, "mask": dict(mask.items())}
    return out


def _drawn_probes() -> list[torch.Tensor]:
    """The probes hutch_diag draws (chunks of 2 samples), as (start, probes) of each chunk, in order."""
    from initprune.curvature import hvp

    drawn, real = [], hvp.rademacher_probes

    def record(*args, **kwargs):
        z = real(*args, **kwargs)
        drawn.append((kwargs["start"], {k: v.clone() for k, v in z.items()}))
        return z

    hvp.rademacher_probes = record
    try:
        model, batches = _scoring_setup()
        score(model, "hutch_diag", batches, seed=4, probes=3, chunk_size=2)
    finally:
        hvp.rademacher_probes = real
    return drawn


def _scoring_and_training_worker(rank: int, port: int, folder: str) -> None:
    _join(rank, port)
    torch.save(_drawn_probes(), Path(folder) / f"probes{rank}.pt")
    torch.save(_scores_and_masks(), Path(folder) / f"scores{rank}.pt")
    loader = TensorLoader(_training_data(), 16, augmentation="flip", seed=2).shard(rank, WORLD)
    torch.save(_train_lenet(loader), Path(folder) / f"train{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_score_and_train_as_one(tmp_path):
    """One pair of processes (each start costs seconds) for both halves of the test."""
    _spawn(_scoring_and_training_worker, str(tmp_path))
    _check_probes(tmp_path)
    _check_scoring(tmp_path)
    _check_training(tmp_path)


def _check_scoring(tmp_path: Path) -> None:
    """Each rank scores 3 or 4 of the 7 samples; the all-reduced sums give every rank the scores of one
    process (to rounding) and the same mask, probes and sampled labels drawn by global sample index."""
    single = _scores_and_masks()
    ranks = [torch.load(tmp_path / f"scores{r}.pt") for r in range(WORLD)]
    for name in CRITERIA:
        for k, s in single[name]["scores"].items():
            for r in ranks:
                torch.testing.assert_close(r[name]["scores"][k], s, rtol=1e-10, atol=1e-18)
            assert torch.equal(ranks[0][name]["scores"][k], ranks[1][name]["scores"][k])
            for r in ranks:
                assert torch.equal(r[name]["mask"][k], single[name]["mask"][k]), (name, k)


def _check_probes(tmp_path: Path) -> None:
    """The ranks draw the probes of their own samples (from their first global index), which together are
    the probes one process draws."""
    single = _drawn_probes()
    ranks = [torch.load(tmp_path / f"probes{r}.pt") for r in range(WORLD)]
    starts = [[start for start, _ in r] for r in ranks]
    assert starts[0][0] == 0 and starts[1][0] in (3, 4), starts
    for name in single[0][1]:
        one = torch.cat([z[name] for _, z in single])
        assert one.shape[0] == 7
        assert torch.equal(torch.cat([z[name] for r in ranks for _, z in r]), one)


def test_probes_depend_on_the_global_sample_index_only():
    shapes = {"a": torch.Size([2, 3]), "b": torch.Size([4])}
    cpu = torch.device("cpu")
    whole = rademacher_probes(shapes, 3, 7, 11, cpu, torch.float64)
    parts = [rademacher_probes(shapes, 3, n, 11, cpu, torch.float64, start=s) for s, n in ((0, 3), (3, 4))]
    for k in shapes:
        assert set(whole[k].unique().tolist()) == {-1.0, 1.0}
        assert torch.equal(torch.cat([p[k] for p in parts]), whole[k])
    other = rademacher_probes(shapes, 3, 7, 12, cpu, torch.float64)
    assert not torch.equal(other["a"], whole["a"])
    # samples differ from one another
    assert not torch.equal(whole["a"][0], whole["a"][1])


# --------------------------------------------------------------------------------- training


def _training_data() -> TensorData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (75, 1, 28, 28), generator=g, dtype=torch.uint8)
    return TensorData(images, torch.randint(0, 4, (75,), generator=g))


def _train_lenet(loader: TensorLoader) -> dict:
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=4, in_channels=1)
    keep = torch.rand(model.fc1.weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    mask = {"fc1.weight": keep}
    config = TrainConfig(epochs=2, lr=0.05, schedule="cosine", seed=3, milestones=(1,), label_smoothing=0.1)
    result = train(model, loader, config, mask=mask, val_loader=None, device="cpu", progress=False)
    return {"weights": model.state_dict(), "history": result["history"]}


def _check_training(tmp_path: Path) -> None:
    """Global batches of 16 (the last of 11: parts of 5 and 6) over 75 samples, flips, label smoothing,
    a mask: the weights of 2 ranks equal those of one process up to float32 rounding."""
    single = _train_lenet(TensorLoader(_training_data(), 16, augmentation="flip", seed=2))
    ranks = [torch.load(tmp_path / f"train{r}.pt") for r in range(WORLD)]
    for k, w in single["weights"].items():
        assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k])
        torch.testing.assert_close(ranks[0]["weights"][k], w, rtol=FLOAT32_STEPS_RTOL, atol=2e-6)
    assert (single["weights"]["fc1.weight"] != _train_lenet_initial()["fc1.weight"]).any()
    for a, b in zip(ranks[0]["history"], single["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=1e-12)


def _train_lenet_initial() -> dict:
    torch.manual_seed(0)
    return create_model("lenet5", num_classes=4, in_channels=1).state_dict()


def test_shards_of_a_loader_make_up_its_batches():
    data = _training_data()
    whole = list(TensorLoader(data, 16, augmentation="flip", seed=2))
    parts = [list(TensorLoader(data, 16, augmentation="flip", seed=2).shard(r, 3)) for r in range(3)]
    assert all(len(p) == len(whole) for p in parts)
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
    loader = TensorLoader(data, 16)
    assert [loader.global_batch_size(i) for i in range(len(loader))] == [16, 16, 16, 16, 11]
    with pytest.raises(InitpruneError, match="rank"):
        loader.shard(2, 2)
    with pytest.raises(InitpruneError, match="last batch holds 3 of 75 samples, fewer than the 4"):
        TensorLoader(data, 8).shard(0, 4)
    assert len(TensorLoader(data, 8, drop_last=True).shard(0, 4)) == 9


def test_shards_of_a_folder_loader_make_up_its_batches(tmp_path):
    """Image files: the ranks' parts of each batch, decoded and cropped and flipped on the device, are
    one process's batch (its order and augmentation come from the same generator calls)."""
    make_tiny(tmp_path)
    splits = load_dataset("tinyimagenet", data_dir=tmp_path, val_size=0, num_workers=0)
    assert splits.augmentation == "crop_flip" and len(splits.train) == 6

    def batches(shard: tuple[int, int] | None) -> list:
        loader = splits.loader("train", 4, seed=3, num_workers=0)
        return list(loader if shard is None else loader.shard(*shard))

    whole, parts = batches(None), [batches((r, 2)) for r in range(2)]
    assert [x.shape[0] for x, _ in whole] == [4, 2] and [x.shape[0] for x, _ in parts[1]] == [2, 1]
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)


# --------------------------------------------------------------------------------- complete runs


def _run_worker(rank: int, port: int, folder: str) -> None:
    """An interrupted run, then the same run again: it resumes from the files alone (nothing else of
    the first attempt is reused by ``run_experiment``), in the same pair of processes."""
    _join(rank, port)
    if rank != 0:  # only rank 0 writes: every file write goes through os.replace (initprune.atomic)

        def refuse(src, dst):
            raise AssertionError(f"rank {rank} wrote {dst}")

        os.replace = refuse  # the spawned process is thrown away afterwards
    out = Path(folder) / "run"
    config = build_config({**RUN, "out": str(out)})
    real_train, real_prune = run_module.train, run_module.prune

    def killed_after_first_epoch(*args, on_epoch_end, **kwargs):
        def hook(record):
            on_epoch_end(record)
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        return real_train(*args, on_epoch_end=hook, **kwargs)

    run_module.train = killed_after_first_epoch
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False)
    dist.barrier()
    if rank == 0:
        cut = {"files": sorted(p.name for p in out.iterdir()), "metrics": (out / "metrics.jsonl").read_text()}
        (Path(folder) / "cut.json").write_text(json.dumps(cut))
    dist.barrier()

    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring ran again")

    def resumed(*args, **kwargs):
        result = real_train(*args, **kwargs)
        assert result["resumed_from_epoch"] == 1
        return result

    run_module.prune, run_module.train = no_scoring, resumed
    result = run_experiment(config, progress=False)
    run_module.prune, run_module.train = real_prune, real_train
    (Path(folder) / f"result{rank}.json").write_text(json.dumps(result))  # not through os.replace
    dist.destroy_process_group()


def test_an_interrupted_two_process_run_resumes_to_the_result_of_one_process(tmp_path):
    single = run_experiment(build_config({**RUN, "out": str(tmp_path / "single")}), progress=False)
    _spawn(_run_worker, str(tmp_path))
    cut = json.loads((tmp_path / "cut.json").read_text())
    written = {"checkpoint.pt", "config.yaml", "mask.pt", "metrics.jsonl", "pruned_init.pt", "pruning.json"}
    assert written <= set(cut["files"]) and "result.json" not in cut["files"]
    assert len(cut["metrics"].splitlines()) == 1
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(WORLD)]
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == results[0]
    mask_single = torch.load(tmp_path / "single" / "mask.pt")["masks"]
    mask_two = torch.load(tmp_path / "run" / "mask.pt")["masks"]
    assert all(torch.equal(mask_two[k], m) for k, m in mask_single.items())
    weights_single = torch.load(tmp_path / "single" / "checkpoint.pt")["model"]
    weights_two = torch.load(tmp_path / "run" / "checkpoint.pt")["model"]
    for k, w in weights_single.items():
        torch.testing.assert_close(weights_two[k], w, rtol=FLOAT32_STEPS_RTOL, atol=2e-6)
    for r in results:
        for key in ("test_accuracy", "val_accuracy", "sparsity", "kept_weights"):
            assert r[key] == pytest.approx(single[key], abs=1e-12), key
        assert r["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == json.loads(cut["metrics"])


def test_sync_batchnorm_is_a_run_setting_off_by_default(tmp_path):
    config = build_config({**RUN, "out": str(tmp_path)})
    assert config.sync_batchnorm is False and config.to_dict()["sync_batchnorm"] is False
    on = build_config({**RUN, "sync_batchnorm": True})
    assert on.to_dict()["sync_batchnorm"] is True and on.identity() != config.identity()
    with pytest.raises(InitpruneError, match="sync_batchnorm"):
        build_config({**RUN, "sync_batchnorm": "maybe"})


def test_one_process_is_untouched():
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert distributed.from_main(lambda a: a + 1, 1) == 2
    batches = [(torch.zeros(3, 2), torch.zeros(3)), (torch.zeros(2, 2), torch.zeros(2))]
    mine, shard = distributed.shard_batches(batches)
    assert [x.shape[0] for x, _ in mine] == [3, 2] and shard == distributed.Shard(0, 5)
    assert [distributed.shard_range(7, r, 2) for r in range(2)] == [(0, 3), (3, 7)]


def test_python_m_initprune_is_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["initprune", "criteria"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("initprune", run_name="__main__")
    assert info.value.code == 0 and "hutch_pruner" in capsys.readouterr().out
