"""Bad configs, files, disks and races: each gets one clear line and exit status 2, never a run on other
data or settings than it says, and nothing left behind that a rerun would trust.

Command-line cases run the real entry point (``initprune.cli:main``) in a subprocess with this checkout on
PYTHONPATH; the folders they work on are made once per module in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from initprune.atomic import atomic_torch_save, remove_stale_temporaries
from initprune.cli import _collapse_summary, _print_result
from initprune.errors import InitpruneError
from initprune.experiments import build_config, load_config_file, run_experiment
from initprune.experiments import run as run_module
from initprune.masks import Mask

from .test_data import make_mnist_files

ROOT = Path(__file__).resolve().parent.parent
# what differs between two makings of one run: timings, the folder, and the torch threads of the process
TIMING = {"warmup_seconds", "scoring_seconds", "train_seconds", "out", "threads"}
TINY = {
    "model": "lenet300",
    "model_options": {},
    "dataset": "synthetic",
    "dataset_options": {"input_shape": [1, 8, 8], "train_size": 320, "test_size": 64, "num_classes": 4},
    "val_size": 64,
    "criterion": "snip",
    "sparsity": 0.9,
    "warmup_batches": 0,
    "scoring_per_class": 3,
    "batch_size": 64,
    "epochs": 2,
    "device": "cpu",
}
DERIVED = ("mask.pt", "pruned_init.pt", "pruning.json", "metrics.jsonl", "checkpoint.pt")


def _config(out: Path, **changes):
    return build_config({**TINY, "out": str(out), **changes})


def _comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def _interrupt_after_first_epoch(config) -> None:
    real_train = run_module.train

    def killed(*args, on_epoch_end, **kwargs):
        def hook(record):
            on_epoch_end(record)
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        return real_train(*args, on_epoch_end=hook, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "train", killed)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(config, progress=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Folders made once: a finished run, the same run cut after its first epoch, the same cut run at
    another sparsity, and a config file of the run's settings."""
    base = tmp_path_factory.mktemp("made")
    run_experiment(_config(base / "whole"), progress=False)
    _interrupt_after_first_epoch(_config(base / "cut"))
    _interrupt_after_first_epoch(_config(base / "other", sparsity=0.5))
    (base / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return {name: base / name for name in ("whole", "cut", "other", "tiny.yaml")}


@pytest.fixture
def reference(made) -> dict:
    return json.loads((made["whole"] / "result.json").read_text())


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _cli_command(args, patch: str = "") -> list[str]:
    if not patch:
        return [sys.executable, "-m", "initprune.cli", *map(str, args)]
    code = f"import sys\n{patch}\nfrom initprune.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", code, *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def initprune(*args, patch: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """``initprune ARGS`` in a subprocess (``patch``: Python run first, to simulate a full disk etc.)."""
    return subprocess.run(
        _cli_command(args, patch), capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )


DRIVER = """
import contextlib, io, json, sys, traceback
from initprune.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def initprune_each(commands: list[list], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Each command line through ``initprune.cli:main``, one after the other in one subprocess (one
    import of torch for all); per command its exit status and what it wrote to stderr."""
    argvs = json.dumps([[str(a) for a in argv] for argv in commands])
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, argvs], capture_output=True, text=True, env=_env(), timeout=timeout,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        subprocess.CompletedProcess(argv, code, "", err)
        for argv, (code, err) in zip(commands, results, strict=True)
    ]


def _refused(done: subprocess.CompletedProcess, *needles: str) -> str:
    """The error line of a refused command, checked: status 2, one line, no traceback, every needle."""
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err[-2000:])
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _run_args(config_file: Path, out: Path, *more) -> list:
    return ["run", "--quiet", "--config", config_file, "--out", out, *more]


def _untrusted(folder: Path) -> list[str]:
    """Files a rerun would read as a run's record or output."""
    if not folder.exists():
        return []
    names = ("run.json", "config.yaml", "result.json", *DERIVED)
    return sorted(p.name for p in folder.iterdir() if p.name in names)


# ---------------------------------------------------------------- 1. the data folder


def test_a_given_data_dir_is_the_only_place_read_and_is_recorded(tmp_path, made):
    missing = tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "partial"
    make_mnist_files(partial)
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    cases = [
        (missing, ["does not exist", str(missing), "apt-get install dataset-fashion-mnist"]),
        (empty, [str(empty), "lacks train-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"]),
        (partial, [str(partial), "lacks train-labels-idx1-ubyte[.gz]", "download them from"]),
    ]
    commands = [
        [*_run_args(made["tiny.yaml"], tmp_path / f"out{i}", "--dataset", "fashion_mnist"), "--data-dir",
         data_dir, "--dataset-options", "download=false"]
        for i, (data_dir, _) in enumerate(cases)
    ]  # fmt: skip
    for (_, needles), done in zip(cases, initprune_each(commands), strict=True):
        _refused(done, *needles)
    assert not any((tmp_path / f"out{i}").exists() for i in range(len(cases)))

    # The folder read is recorded in result.json.
    data = tmp_path / "mnist-files"
    make_mnist_files(data, n_train=60, n_test=20)
    config = build_config(
        {**TINY, "dataset": "mnist", "dataset_options": {"download": False}, "val_size": 10, "epochs": 1,
         "model_options": {}, "data_dir": str(data), "out": str(tmp_path / "mnist-run")}
    )  # fmt: skip
    result = run_experiment(config, progress=False)
    assert result["data_dir"] == str(data.resolve())
    assert json.loads((tmp_path / "mnist-run" / "result.json").read_text())["data_dir"] == str(data.resolve())


# ---------------------------------------------------------------- 2 and 9. typed settings, bad files


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('exclude_first: "false"\n', ["exclude_first must be true or false", "'false'"]),
        ('nesterov: "false"\n', ["nesterov must be true or false", "'false'"]),
        ("scoring_augment: maybe\n", ["scoring_augment must be true or false", "'maybe'"]),
        ("batch_size: 64.5\n", ["batch_size must be an integer", "64.5"]),
        ('lr: "0.1"\n', ["lr must be a number", "'0.1'"]),
        ("amp: yes please\n", ["amp must be true, false or auto", "'yes please'"]),
        ("data_dir: 5\n", ["data_dir must be a string or null", "got 5"]),
        ("criterion: [snip]\n", ["criterion must be a string", "['snip']"]),
        ("model: [vgg11\n", ["is not valid YAML", "line 2"]),
        ("- snip\n- grasp\n", ["must hold a mapping of key: value, not a list"]),
        ("seed: 18446744073709551616\n", ["seed must be an integer in [0, 2**64)", "18446744073709551616"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_config_values_are_one_line(tmp_path, text, needles):
    """Unit check of each bad config file (the same errors the command gives, tested below)."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InitpruneError) as info:
        build_config(load_config_file(path), f"config file {path}")
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_bad_config_files_and_flags_exit_2_through_the_command(tmp_path, made):
    files = {
        "bools.yaml": ('exclude_first: "false"\n', ["exclude_first", "'false'"]),
        "maybe.yaml": ("scoring_augment: maybe\n", ["scoring_augment", "'maybe'"]),
        "syntax.yaml": ("model: [vgg11\n", ["not valid YAML", "syntax.yaml"]),
        "list.yaml": ("- snip\n", ["must hold a mapping"]),
        "datadir.yaml": ("data_dir: 5\n", ["data_dir", "got 5"]),
        "criterion.yaml": ("criterion: [snip]\n", ["criterion must be a string", "['snip']"]),
    }
    commands, expected = [], []
    for name, (text, needles) in files.items():
        (tmp_path / name).write_text(text)
        commands.append(["run", "--quiet", "--config", tmp_path / name, "--out", tmp_path / f"out-{name}"])
        expected.append(needles)
    flags = [
        (["--seed", str(2**64)], ["seed must be an integer in [0, 2**64)", str(2**64)]),
        (["--out", made["tiny.yaml"]], ["is a file, not a folder", str(made["tiny.yaml"])]),
    ]
    for more, needles in flags:
        commands.append(
            ["run", "--quiet", "--config", made["tiny.yaml"], "--out", tmp_path / "flag-out", *more]
        )
        expected.append(needles)
    commands.append(["run", "--quiet", "--seed", "1.5", "--out", tmp_path / "flag-out"])  # argparse's
    results = initprune_each(commands)
    for needles, done in zip(expected, results, strict=False):
        _refused(done, *needles)
    assert results[-1].returncode == 2 and "--seed" in results[-1].stderr and "'1.5'" in results[-1].stderr
    assert not list(tmp_path.glob("out-*")) and not (tmp_path / "flag-out").exists()
    assert yaml.safe_load(made["tiny.yaml"].read_text()) == TINY  # the file named by --out is untouched
    # The exit status itself, through the command as installed.
    done = initprune("run", "--quiet", "--config", tmp_path / "maybe.yaml", "--out", tmp_path / "x")
    _refused(done, "scoring_augment", "'maybe'")


# ---------------------------------------------------------------- 3 and 4. identity of a folder and its files


def test_an_edited_config_yaml_changes_nothing_about_its_folder(tmp_path, made):
    finished = _copy(made["whole"], tmp_path / "finished")
    unfinished = _copy(made["cut"], tmp_path / "unfinished")
    mask_before = (unfinished / "mask.pt").read_bytes()
    commands = []
    for folder in (finished, unfinished):
        settings = yaml.safe_load((folder / "config.yaml").read_text())
        settings["sparsity"] = 0.5
        (folder / "config.yaml").write_text(yaml.safe_dump(settings))
        commands.append(_run_args(folder / "config.yaml", folder))
    for done in initprune_each(commands):
        _refused(done, "differing: sparsity", "0.5")
    assert (unfinished / "mask.pt").read_bytes() == mask_before
    assert not (unfinished / "result.json").exists()


@pytest.mark.parametrize("name", DERIVED)
def test_a_file_of_another_run_is_refused(tmp_path, made, name):
    folder = _copy(made["cut"], tmp_path / "run")
    shutil.copy(made["other"] / name, folder / name)
    with pytest.raises(InitpruneError, match="belongs to another run") as info:
        run_experiment(_config(folder), progress=False)
    assert name in str(info.value) and "delete it" in str(info.value)
    assert not (folder / "result.json").exists()


def test_a_copied_result_and_a_file_without_a_hash_are_refused(tmp_path, made):
    finished = _copy(made["whole"], tmp_path / "finished")
    result = json.loads((finished / "result.json").read_text())
    (finished / "result.json").write_text(json.dumps({**result, "settings_hash": "0123456789abcdef"}))
    with pytest.raises(InitpruneError, match=r"result.json' belongs to another run"):
        run_experiment(_config(finished), progress=False)

    folder = _copy(made["cut"], tmp_path / "cut")
    state = torch.load(folder / "pruned_init.pt", weights_only=True)["model"]
    torch.save(state, folder / "pruned_init.pt")  # a bare state dict: no settings hash
    with pytest.raises(InitpruneError, match=r"pruned_init.pt' carries no settings hash"):
        run_experiment(_config(folder), progress=False)


def test_the_mask_of_another_run_is_refused_through_the_command(tmp_path, made):
    folder = _copy(made["cut"], tmp_path / "run")
    shutil.copy(made["other"] / "mask.pt", folder / "mask.pt")
    err = _refused(initprune(*_run_args(made["tiny.yaml"], folder)), "mask.pt", "belongs to another run")
    assert "settings hash" in err


# ---------------------------------------------------------------- 5. one run per folder


def test_a_locked_folder_is_refused_and_kill_9_releases_it(tmp_path, made):
    out = tmp_path / "run"
    out.mkdir()
    # The holder takes the same lock as a run (flock on the folder) without importing torch.
    hold = (
        "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nprint('locked', flush=True)\ntime.sleep(300)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        _refused(initprune(*_run_args(made["tiny.yaml"], out)), "in use by another run", str(out))
        assert _untrusted(out) == []
        with pytest.raises(InitpruneError, match="in use by another run"):
            run_experiment(_config(out), progress=False)
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    assert run_experiment(_config(out), progress=False)["test_accuracy"] is not None


def test_two_runs_started_together_into_one_folder_never_mix(tmp_path, made):
    out = tmp_path / "run"
    both = [
        subprocess.Popen(
            _cli_command(_run_args(made["tiny.yaml"], out, "--sparsity", sparsity)),
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for sparsity in ("0.5", "0.9")
    ]
    errors = [p.communicate(timeout=300)[1] for p in both]
    codes = sorted(p.returncode for p in both)
    assert codes == [0, 2], errors
    loser = next(e for p, e in zip(both, errors, strict=True) if p.returncode == 2)
    assert "in use by another run" in loser or "differing: sparsity" in loser
    recorded = json.loads((out / "run.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert result["settings_hash"] == recorded["settings_hash"]
    assert result["target_sparsity"] == recorded["settings"]["sparsity"]
    assert Mask.load(out / "mask.pt").sparsity == pytest.approx(result["target_sparsity"], abs=0.01)


# ---------------------------------------------------------------- 8. corrupt files


def test_a_corrupt_file_is_named_with_what_to_do(tmp_path, made, reference):
    names = [*DERIVED, "result.json", "run.json"]
    folders = []
    for name in names:
        source = made["whole"] if name == "result.json" else made["cut"]
        folder = _copy(source, tmp_path / name)
        (folder / name).write_bytes(b"\x00garbage{\n")
        folders.append(folder)
    results = initprune_each([_run_args(made["tiny.yaml"], folder) for folder in folders])
    for name, folder, done in zip(names, folders, results, strict=True):
        err = _refused(done, name, "corrupt")
        if name == "run.json":
            assert "delete the folder" in err
            continue
        assert "delete it and run the same command again" in err, err
        # Doing what it says ends as an uninterrupted run would.
        (folder / name).unlink()
        assert _comparable(run_experiment(_config(folder), progress=False)) == _comparable(reference), name


def test_mask_load_of_garbage_says_corrupt(tmp_path):
    for content in (b"", b"not a torch file at all", b"PK\x03\x04broken zip"):
        (tmp_path / "m.pt").write_bytes(content)
        with pytest.raises(InitpruneError, match=r"'.*m.pt' is corrupt or not a mask"):
            Mask.load(tmp_path / "m.pt")
    torch.save({"format": "initprune.mask", "masks": [1, 2]}, tmp_path / "m.pt")
    with pytest.raises(InitpruneError, match="holds no name -> tensor masks"):
        Mask.load(tmp_path / "m.pt")


# ---------------------------------------------------------------- 10. full disks and read-only folders


class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as a full device's do."""

    def __init__(self, file, room: int):
        self._file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            import errno

            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def test_a_full_disk_during_torch_save_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import initprune.atomic as atomic

    target = tmp_path / "state.pt"
    atomic_torch_save({"x": torch.ones(3)}, target)
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 2000))
    with pytest.raises(InitpruneError, match=r"cannot write '.*state.pt': no space left on the device"):
        atomic_torch_save({"x": torch.zeros(100_000)}, target)  # torch.save hides ENOSPC in a RuntimeError
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


FULL_AT_SECOND_CHECKPOINT = """
import errno
from pathlib import Path
import initprune.atomic as atomic
real, seen = atomic.atomic_write, []
def atomic_write(path, fill):
    seen.append(Path(path).name)
    if Path(path).name == "checkpoint.pt" and seen.count("checkpoint.pt") == 2:
        def fill(f):
            f.write(b"part of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
    return real(path, fill)
atomic.atomic_write = atomic_write
"""


def test_no_space_left_mid_run_then_the_rerun_resumes_exactly(tmp_path, made, reference):
    out = tmp_path / "run"
    _refused(
        initprune(*_run_args(made["tiny.yaml"], out), patch=FULL_AT_SECOND_CHECKPOINT),
        "no space left on the device", "checkpoint.pt", "run the same command again",
    )  # fmt: skip
    # Every file left loads, and nothing half-written is there.
    assert not list(out.glob(".*.tmp")) and not (out / "result.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    Mask.load(out / "mask.pt")
    torch.load(out / "pruned_init.pt", weights_only=True)
    json.loads((out / "pruning.json").read_text())
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert _comparable(run_experiment(_config(out), progress=False)) == _comparable(reference)
    whole = torch.load(made["whole"] / "checkpoint.pt", weights_only=True)["model"]
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


READ_ONLY = """
import errno, sys, tempfile
from pathlib import Path
real = tempfile.mkstemp
def mkstemp(*args, dir=None, **kwargs):
    if dir is not None and Path(dir).resolve() == Path(sys.argv[-1]).resolve():
        raise OSError(errno.EROFS, "Read-only file system", str(dir))
    return real(*args, dir=dir, **kwargs)
tempfile.mkstemp = mkstemp
"""


def test_a_read_only_output_folder_fails_before_anything_runs(tmp_path, made):
    folder = _copy(made["cut"], tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    start = time.perf_counter()
    done = initprune(*_run_args(made["tiny.yaml"], folder), patch=READ_ONLY)
    _refused(done, "is not writable", "Read-only file system", str(folder))
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert time.perf_counter() - start < 120


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_by_permissions(tmp_path, made):
    folder = _copy(made["cut"], tmp_path / "run")
    folder.chmod(0o555)
    try:
        _refused(initprune(*_run_args(made["tiny.yaml"], folder)), "is not writable", str(folder))
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- 11 and 12. nothing left behind


def test_a_failed_command_leaves_nothing_and_the_corrected_one_is_accepted(tmp_path, made, reference):
    bad = [
        (["--val-size", "320"], ["val_size=320", "320 training samples"]),
        (["--criterion-options", "nosuch=1"], ["nosuch"]),
        (["--model-options", "nosuch=1"], ["nosuch"]),
        (["--dataset", "fashion_mnist", "--data-dir", tmp_path / "missing", "--dataset-options",
          "download=false"], ["does not exist"]),
        (["--dataset-options", "input_shape=[1,8,8]", "train_size=320", "test_size=-1"], ["test_size"]),
    ]  # fmt: skip
    (tmp_path / "existing").mkdir()  # a folder that was there stays (empty), the others are not made
    outs = [tmp_path / "existing", *(tmp_path / f"run{i}" for i in range(1, len(bad)))]
    commands = [_run_args(made["tiny.yaml"], out, *more) for out, (more, _) in zip(outs, bad, strict=True)]
    results = initprune_each([*commands, _run_args(made["tiny.yaml"], tmp_path / "existing")])
    for (_, needles), done in zip(bad, results, strict=False):
        _refused(done, *needles)
    assert results[-1].returncode == 0, results[-1].stderr  # the corrected command, into the same folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    result = json.loads((tmp_path / "existing" / "result.json").read_text())
    assert _comparable(result) == _comparable(reference)


def test_stale_temporaries_are_removed_when_a_run_resumes(tmp_path, made, reference):
    folder = _copy(made["cut"], tmp_path / "run")
    stale = [folder / ".checkpoint.pt.k2j3h4.tmp", folder / ".metrics.jsonl.x8y9.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    (folder / "notes.tmp").write_text("a user's file")
    result = run_experiment(_config(folder), progress=False)
    assert not any(p.exists() for p in stale) and (folder / "notes.tmp").exists()
    assert _comparable(result) == _comparable(reference)
    assert remove_stale_temporaries(folder) == []


# ---------------------------------------------------------------- 14. the printed summary


def test_the_summary_reports_both_kinds_of_collapse(capsys):
    result = {
        "model": "m", "dataset": "d", "criterion": "snip", "criterion_options": {}, "sparsity": 0.999999,
        "kept_weights": 3, "prunable_weights": 3000000, "val_accuracy": 0.1, "test_accuracy": 0.1,
        "warmup_seconds": 0.0, "scoring_seconds": 0.0, "train_seconds": 0.0,
        "per_layer_density": {"a.weight": 0.0, "b.weight": 0.001}, "out": "x",
        "collapsed_layers": [], "disconnected_layers": ["a.weight", "b.weight"],
    }  # fmt: skip
    _print_result(result)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("layer collapse"))
    assert line == "layer collapse: 2 disconnected layer(s) (no input-output path): a.weight, b.weight"
    both = {**result, "collapsed_layers": ["a.weight"]}
    assert _collapse_summary(both) == (
        "1 empty layer(s): a.weight; 1 disconnected layer(s) (no input-output path): b.weight"
    )
    assert _collapse_summary({**result, "disconnected_layers": []}) == "none"


# ---------------------------------------------------------------- folders of the earlier format


def _to_earlier_format(folder: Path, drop_default_key: str = "label_smoothing") -> None:
    """Make ``folder`` as the code before run.json wrote it: no run.json, no settings hash in any file,
    pruned_init.pt a bare state dict, result.json without data_dir; its config.yaml lacks one key that is
    at its default, as a folder written before that key existed would."""
    (folder / "run.json").unlink()
    settings = yaml.safe_load((folder / "config.yaml").read_text())
    del settings[drop_default_key]
    (folder / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    if (folder / "mask.pt").exists():
        payload = torch.load(folder / "mask.pt", weights_only=True)
        del payload["settings_hash"]
        torch.save(payload, folder / "mask.pt")
    if (folder / "pruned_init.pt").exists():
        torch.save(
            torch.load(folder / "pruned_init.pt", weights_only=True)["model"], folder / "pruned_init.pt"
        )
    for name in ("pruning.json", "result.json"):
        if (folder / name).exists():
            payload = json.loads((folder / name).read_text())
            payload.pop("settings_hash")
            payload.pop("data_dir", None)
            (folder / name).write_text(json.dumps(payload, indent=2) + "\n")
    if (folder / "metrics.jsonl").exists():
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        (folder / "metrics.jsonl").write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "settings_hash"}) + "\n" for r in lines)
        )
    if (folder / "checkpoint.pt").exists():
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        del state["settings_hash"]
        torch.save(state, folder / "checkpoint.pt")


def test_an_unfinished_folder_of_the_earlier_format_is_adopted_and_resumes(tmp_path, made, reference):
    folder = _copy(made["cut"], tmp_path / "run")
    _to_earlier_format(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "prune", lambda *a, **k: pytest.fail("scoring must not run again"))
        result = run_experiment(_config(folder), progress=False)
    assert _comparable(result) == _comparable(reference)
    recorded = json.loads((folder / "run.json").read_text())
    assert recorded["adopted"] is True and recorded["settings_hash"] == reference["settings_hash"]
    whole = torch.load(made["whole"] / "checkpoint.pt", weights_only=True)["model"]
    resumed = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # Adopted once: the next command reads run.json, and other settings are refused as ever.
    assert run_experiment(_config(folder), progress=False) == result
    with pytest.raises(InitpruneError, match=r"differing: sparsity"):
        run_experiment(_config(folder, sparsity=0.5), progress=False)


def test_a_finished_folder_of_the_earlier_format_returns_its_result_unchanged(tmp_path, made):
    folder = _copy(made["whole"], tmp_path / "run")
    _to_earlier_format(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    stored = json.loads((folder / "result.json").read_text())
    assert run_experiment(_config(folder), progress=False) == stored
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written
    with pytest.raises(InitpruneError, match=r"differing: epochs"):
        run_experiment(_config(folder, epochs=1), progress=False)


COMMITTED = sorted(
    p for p in (ROOT / "docs/results").rglob("result.json") if (p.parent / "config.yaml").exists()
)


@pytest.mark.skipif(not COMMITTED, reason="no committed run folders")
def test_the_committed_run_folders_are_still_recognized_as_finished():
    """Folders written by the earlier code, committed to the repository: each returns its stored result
    with its own config.yaml, and nothing in it is written."""
    for path in COMMITTED:
        folder = path.parent
        before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        config = build_config({**load_config_file(folder / "config.yaml"), "out": str(folder)})
        assert run_experiment(config, progress=False) == json.loads(path.read_text())
        assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


# ---------------------------------------------------------------- checks a sweep can make before any run


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"criterion": "nosuch"}, "unknown criterion 'nosuch'"),
        ({"criterion_options": {"probes": 3}}, "does not take option(s) 'probes'"),
        ({"model": "vgg7"}, "unknown model 'vgg7'"),
        ({"model_options": {"depth": 3}}, "does not take option(s) 'depth'"),
        ({"dataset": "nosuch"}, "unknown dataset 'nosuch'"),
        ({"dataset_options": {"nosuch": 1}}, "unknown option(s) ['nosuch']"),
        ({"data_dir": "/nonexistent/data"}, "'/nonexistent/data' does not exist"),
        ({"val_size": 320}, "val_size=320 leaves no training data"),
        ({"dataset": "cifar10", "dataset_options": {}, "val_size": 50000}, "cifar10 has 50000 training"),
        ({"dataset": "mnist", "dataset_options": {"download": "no"}}, "download of 'mnist' must be true or"),
    ],
)
def test_validate_config_catches_what_a_run_would_fail_on(tmp_path, changes, message):
    from initprune.experiments import validate_config

    try:  # the criterion and its options are already checked when the settings are built
        config = _config(tmp_path / "run", **changes)
    except InitpruneError as exc:
        assert "criterion" in changes or "criterion_options" in changes
        assert message in str(exc)
        return
    with pytest.raises(InitpruneError) as info:
        validate_config(config)
    assert message in str(info.value)
    with pytest.raises(InitpruneError):
        run_experiment(config, progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


def test_typed_fields_hold_for_the_library_too():
    from initprune.experiments import RunConfig

    with pytest.raises(InitpruneError, match=r"exclude_first must be true or false.*'false'"):
        RunConfig(exclude_first="false")
    with pytest.raises(InitpruneError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        RunConfig(seed=-1)
    assert RunConfig(out=Path("x"), data_dir=Path("d")).out == "x"
    # One spelling per value: a float field given an integer is the same run, in its hash too.
    assert _config(Path("a"), epochs=2).settings_hash() == _config(Path("b"), epochs=2.0).settings_hash()
