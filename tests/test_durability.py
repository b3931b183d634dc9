"""Nothing lost, nothing silently wrong: last.ckpt, exact-or-refused resume, run folders as data owned
by one run, atomic writes with checksums, every stop recorded."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from conftest import QUIET, ROOT, compose_config
from lossheads.config.validators import ConfigError
from lossheads.run import atomic
from lossheads.run.checkpoints import META, RunCheckpointIO, read_checkpoint, resolve_checkpoint
from lossheads.run.execute import main, run
from lossheads.run.lock import LOCK_NAME
from lossheads.run.resume import check_resume, resolved

TESTS = Path(__file__).resolve().parent


def train(folder: Path, *overrides: str) -> dict:
    return run(compose_config([*QUIET, *overrides], folder))


# ---- 1. last.ckpt is the newest state ----------------------------------------------------------------


class ScriptedMetric(LightningModule):
    """A one-weight model whose validation metric follows a script: better, better, then worse."""

    SCRIPT = (3.0, 2.0, 1.0, 2.0, 3.0)

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("m", self.SCRIPT[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return [torch.zeros(1)] * 2

    def val_dataloader(self):
        return [torch.zeros(1)]


def test_lightning_writes_last_ckpt_only_on_a_new_best_when_it_monitors(tmp_path):
    """The framework fact our LastCheckpoint exists for (Lightning 2.6): with a monitor, save_last
    follows the best. The day Lightning writes last.ckpt every epoch, this test fails."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="m", mode="min", save_last=True)
    trainer = Trainer(max_epochs=5, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(ScriptedMetric())
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    per_epoch = trainer.global_step // 5
    assert last["epoch"] == 2 and last["global_step"] == 3 * per_epoch  # the best epoch's, not the end's


def test_last_ckpt_holds_the_final_step_when_validation_gets_worse(tmp_path):
    # mode=max on a falling val/loss: every epoch after the first is worse, so the best stays epoch 0
    record = train(tmp_path / "run", "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max")
    folder = tmp_path / "run" / "checkpoints"
    last = read_checkpoint("ckpt_path", folder / "last.ckpt")
    best = read_checkpoint("ckpt_path", folder / "best-epoch000.ckpt")
    assert last["global_step"] == record["steps"] == 18 and last["epoch"] == 2
    assert best["global_step"] == 6
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    # `last`, the folder and a moved folder's last-v1.ckpt: found by recorded step, not by name
    assert resolve_checkpoint("ckpt_path", "last", tmp_path / "run") == folder / "last.ckpt"
    (folder / "last.ckpt").rename(folder / "last-v1.ckpt")
    (folder / "last.ckpt").write_bytes((folder / "best-epoch000.ckpt").read_bytes())  # a stale last.ckpt
    assert resolve_checkpoint("ckpt_path", tmp_path / "run", tmp_path) == folder / "last-v1.ckpt"


# ---- 2. resume is exact or refused --------------------------------------------------------------------

CHANGES_MEANING = {
    "optimizer.lr=100": "optimizer.lr=100 (the checkpoint's run: 0.001)",
    "optimizer.weight_decay=1000": "optimizer.weight_decay=1000 (the checkpoint's run: 0.0)",
    "loss=focal": "loss.name='focal' (the checkpoint's run: 'auto')",
    "loss.reduction=sum": "loss.reduction='sum' (the checkpoint's run: None)",
    "data=synthetic_binary": "data._target_=",
    "data.split_seed=7": "data.split_seed=7 (the checkpoint's run: 42)",
    "data.batch_size=32": "data.batch_size=32 (the checkpoint's run: 64)",
    "seed=3": "seed=3 (the checkpoint's run: 42)",
    "model.hidden=[8]": "model.hidden=[8] (the checkpoint's run: [64, 64])",
    "model.dropout=0.5": "model.dropout=0.5",
    "head=softmax": "head.name='softmax'",
    "steps_per_call=4": "steps_per_call=4 (the checkpoint's run: 32)",
    "trainer.precision=64-true": "trainer.precision='64-true'",
    "+optimizer.betas=[0.5,0.9]": "optimizer.betas=[0.5, 0.9] (the checkpoint's run: <absent>)",
    "threshold=0.3": "threshold=0.3",
    "+trainer.limit_train_batches=2": "trainer.limit_train_batches=2 (the checkpoint's run: <absent>)",
}
MAY_CHANGE = [
    "trainer.max_epochs=40", "trainer.log_every_n_steps=1", "callbacks.progress_bar.refresh_rate=1", "logger=csv",
    "print_config=true", "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer=cpu",
    "trainer.enable_model_summary=true",
]  # fmt: skip


GROUPS = ("loss", "data", "head", "logger", "trainer")


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict:
    """The default config and each group choice the test draws, each composed once by Hydra; an
    example's config is the default with its choices and values set (no Hydra, no training per example)."""
    folder = tmp_path_factory.mktemp("configs")
    group_choices = [o for o in [*CHANGES_MEANING, *MAY_CHANGE] if o.partition("=")[0] in GROUPS]
    return {"base": compose_config(QUIET, folder),
            **{o: compose_config([*QUIET, o], folder)[o.partition("=")[0]] for o in group_choices}}  # fmt: skip


def with_overrides(configs: dict, overrides: list[str]) -> dict:
    cfg = copy.deepcopy(configs["base"])
    for override in sorted(overrides, key=lambda o: o.partition("=")[0] not in GROUPS):  # groups first, as Hydra
        key, _, value = override.lstrip("+").partition("=")
        if key in GROUPS:
            cfg[key] = copy.deepcopy(configs[override])
        else:
            OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)
    return resolved(cfg)


SAVED = {"global_step": 60, "epoch": 9, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 10}}}}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changed=st.lists(st.sampled_from(sorted(CHANGES_MEANING)), min_size=1, max_size=3, unique=True),
       allowed=st.lists(st.sampled_from(MAY_CHANGE), max_size=3, unique=True))  # fmt: skip
def test_a_resume_refuses_every_change_of_meaning_and_accepts_the_rest(configs, changed, allowed):
    saved = {**SAVED, META: {"config": with_overrides(configs, [])}}
    with pytest.raises(ConfigError) as refused:
        check_resume("run/checkpoints/last.ckpt", saved, with_overrides(configs, [*allowed, *changed]))
    message = str(refused.value)
    assert "\n" not in message and "a resume continues its run exactly" in message
    for override in changed:
        assert CHANGES_MEANING[override] in message, (override, message)
    listed = message.split("these overrides change it: ")[1].split("; drop them")[0]
    for override in allowed:
        assert f"{override.partition('=')[0]}=" not in listed, (override, message)
    check_resume("run/checkpoints/last.ckpt", saved, with_overrides(configs, allowed))  # accepted


def test_resume_to_fewer_epochs_is_refused_and_a_resume_records_where_it_started(tmp_path):
    train(tmp_path / "run", "trainer.max_epochs=2")
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=1 is not valid: the checkpoint .* already trained 2"):
        train(tmp_path / "run", "trainer.max_epochs=1", "ckpt_path=last")
    with pytest.raises(ConfigError, match=r"optimizer.lr=100.0 \(the checkpoint's run: 0.001\)"):
        train(tmp_path / "run", "trainer.max_epochs=3", "ckpt_path=last", "optimizer.lr=100.0")
    with warnings.catch_warnings(record=True) as said:  # `python train.py ...`, in-process
        main(compose_config([*QUIET, "trainer.max_epochs=3", "ckpt_path=last"], tmp_path / "run"))
    assert not [w for w in said if "exists and is not empty" in str(w.message)]  # its own checkpoints: no warning
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert resumed["resumed_from"] == {"checkpoint": str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
                                       "epochs": 2, "step": 12}  # fmt: skip
    assert resumed["steps"] == 18 and resumed["status"] == "ok"


# ---- 3. run folders are data, never code ------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["model"].update(_target_="os.system"), "names _target_='os.system', which is not one of"),
        (lambda c: c["loss"].update(name="os.system"), "loss='os.system' is not valid: use one of"),
        (lambda c: c["model"].update(hidden={"_target_": "os.system", "_args_": ["touch pwned"]}),
         "holds model.hidden._target_='os.system'; a run folder is data"),
    ],
)  # fmt: skip
def test_a_crafted_teacher_folder_is_refused_and_nothing_runs(tmp_path, edit, message, monkeypatch, one_epoch_run):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(one_epoch_run, tmp_path / "teacher")
    path = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint("ckpt_path", path)
    config = checkpoint[META]["config"]
    edit(config)
    RunCheckpointIO(config).save_checkpoint(checkpoint, path)  # a valid checksum: the attacker can compute it
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(ConfigError, match=message):
        train(tmp_path / "student", "loss=kd", f"teacher.ckpt_path={path}")
    assert not calls and not (tmp_path / "pwned").exists() and not (tmp_path / "student" / "metrics.json").exists()


def test_evaluating_weights_that_diverged_is_refused_in_one_line_and_records_nothing(tmp_path, one_epoch_run):
    """A checkpoint whose weights blew up (a saturating loss such as bce can keep a run's loss finite
    while they do) gives no result: its evaluation is refused, naming the checkpoint, and nothing
    that looks like one is written, beside the run or in a folder of its own. (Weights that are not
    finite themselves are refused before anything runs: tests/test_startup.py.)"""
    shutil.copytree(one_epoch_run, tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint("ckpt_path", path)
    for name, weight in checkpoint["state_dict"].items():
        if name.startswith("net."):
            # finite, but the activations overflow float32 to inf - inf (inf weights are refused on reading)
            weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)).sign() * 1e30)
    RunCheckpointIO(checkpoint[META]["config"], checkpoint[META].get("inputs")).save_checkpoint(checkpoint, path)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    not_finite = r"ckpt_path=.*last.ckpt is not valid: the network's test outputs are not finite \(NaN or inf\)"
    with pytest.raises(ConfigError, match=not_finite):
        train(tmp_path / "run", "train=false", "ckpt_path=last")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # no eval-*.json beside it
    with pytest.raises(ConfigError, match=not_finite):
        train(tmp_path / "eval", "train=false", f"ckpt_path={path}")
    assert not (tmp_path / "eval" / "metrics.json").exists() and not (tmp_path / "eval" / "predictions.npz").exists()


# ---- 4. a run folder belongs to one run -------------------------------------------------------------


def test_a_run_folder_is_never_taken_over_and_an_evaluation_writes_beside_it(tmp_path):
    first = train(tmp_path / "run", "trainer.max_epochs=1")
    # (its TensorBoard writer flushes its last events when it is collected: those files are left out)
    owned = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.parts[-2] == "run"}
    owned.update({p: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()})
    foreign = r"hydra.run.dir='.*run' is not valid: it holds another run \(metrics.json, checkpoints/last.ckpt\)"
    with pytest.raises(ConfigError, match=foreign):
        train(tmp_path / "run", "trainer.max_epochs=1", "seed=7")
    with pytest.raises(ConfigError, match="it holds this configuration's run already"):
        train(tmp_path / "run", "trainer.max_epochs=1")
    evaluated = train(tmp_path / "run", "trainer.max_epochs=1", "train=false", "ckpt_path=last")
    assert {p: p.read_bytes() for p in owned} == owned  # nothing of the run was touched
    (record,) = (tmp_path / "run").glob("eval-*.json")
    assert evaluated["record"] == record.name and json.loads(record.read_text())["test/acc"] == first["test/acc"]
    assert list((tmp_path / "run").glob("eval-*.npz"))


def test_a_refused_command_puts_the_owners_hydra_files_back(tmp_path, capsys):
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=1\n")  # as Hydra writes it
    main(compose_config([*QUIET, "trainer.max_epochs=1"], folder))
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=7\n")  # Hydra, for the next command, before our code
    with pytest.raises(SystemExit) as refused:
        main(compose_config([*QUIET, "trainer.max_epochs=1", "seed=7"], folder))
    assert refused.value.code == 2 and "it holds another run" in capsys.readouterr().err
    assert (folder / ".hydra" / "overrides.yaml").read_text() == "- trainer.max_epochs=1\n"


# ---- 5. atomic writes, full and read-only disks, checksums ------------------------------------------


def test_a_write_is_all_or_nothing_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic.write_text(target, "old")
    renames = []
    real_replace = os.replace

    def replace(src, dst):  # at the rename, the new content is complete and the old one still in place
        renames.append((Path(src).parent, Path(src).read_text(), Path(dst).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.write_text(target, "new")
    assert renames == [(tmp_path, "new", "old")] and target.read_text() == "new"

    def killed(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic(target, killed)
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_writes_made_durable_together_are_flushed_once_at_the_blocks_end(tmp_path, monkeypatch):
    """A seeds group's member checkpoints: no fsync per file inside `durable_together`, one flush of the
    filesystem as the block ends (also when it ends by an error), before what follows it; outside the
    block each durable write fsyncs its file and folder as before."""
    calls: list[str] = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(atomic, "sync_filesystem", lambda folder: calls.append(f"sync {folder.name}"))
    with atomic.durable_together():
        for name in ("last.ckpt", "best.ckpt"):
            atomic.write_text(tmp_path / name, name)
        with atomic.durable_together():  # nested: the outer block's end makes it durable
            atomic.write_text(tmp_path / "inner.ckpt", "inner")
        atomic.write_bytes(tmp_path / "log", b"x", durable=False)
        assert calls == []
    assert calls == [f"sync {tmp_path.name}"] and (tmp_path / "best.ckpt").read_text() == "best.ckpt"
    calls.clear()
    with pytest.raises(KeyboardInterrupt), atomic.durable_together():
        atomic.write_text(tmp_path / "last.ckpt", "again")
        raise KeyboardInterrupt
    assert calls == [f"sync {tmp_path.name}"]
    calls.clear()
    atomic.write_text(tmp_path / "metrics.json", "{}")
    assert calls == ["fsync", "fsync"]  # the file, then its folder
    with atomic.durable_together():
        pass
    assert calls == ["fsync", "fsync"]  # nothing written: nothing to flush


def test_sync_filesystem_flushes_a_folders_filesystem_and_a_late_full_disk_is_one_line(tmp_path, monkeypatch):
    import ctypes
    from types import SimpleNamespace

    atomic.sync_filesystem(tmp_path)  # syncfs on Linux, os.sync elsewhere: it returns
    atomic.sync_filesystem(tmp_path / "gone")  # a folder removed since: os.sync
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: SimpleNamespace(syncfs=lambda fd: -1))
    monkeypatch.setattr(ctypes, "get_errno", lambda: errno.ENOSPC)
    with pytest.raises(atomic.StorageError, match=f"^cannot write {re.escape(str(tmp_path))}: the disk is full: "):
        atomic.sync_filesystem(tmp_path)


KILLED_WRITER = """
import sys, torch
from lossheads.run.checkpoints import RunCheckpointIO
io = RunCheckpointIO({"seed": 1})
for i in range(1000):
    io.save_checkpoint({"state_dict": {"w": torch.full((3_000_000,), float(i))}, "global_step": i}, sys.argv[1])
    print(i, flush=True)
"""


@pytest.mark.slow
def test_a_sigkill_during_a_checkpoint_write_on_another_filesystem_leaves_a_whole_checkpoint(tmp_path):
    """/dev/shm is a tmpfs: another filesystem than /tmp, where Lightning's own save would copy."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else tmp_path
    target = folder / f"lossheads-test-{os.getpid()}" / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "0"
        writer.stdout.readline()
        time.sleep(0.05)
        writer.kill()  # SIGKILL, somewhere in a write
        writer.wait(timeout=30)
        saved = read_checkpoint("ckpt_path", target)  # whole, and its checksum verified
        assert saved["state_dict"]["w"][0] == saved["global_step"] >= 1
    finally:
        for leftover in target.parent.iterdir():
            leftover.unlink()
        target.parent.rmdir()


@pytest.mark.slow
def test_concurrent_writers_of_one_metrics_json_never_fail(tmp_path):
    target = tmp_path / "metrics.json"
    script = "import sys, pathlib\nfrom lossheads.run.records import write_metrics\n" \
             "for i in range(150): write_metrics(pathlib.Path(sys.argv[1]), {'writer': 'process', 'i': i})"  # fmt: skip
    command = [sys.executable, "-c", script, str(target)]
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE) for _ in range(2)]
    errors = []

    def write_many(n):
        from lossheads.run.records import write_metrics

        for i in range(150):
            try:
                write_metrics(target, {"writer": n, "i": i})
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=write_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.wait(timeout=120) for p in processes] == [0, 0], [p.stderr.read() for p in processes]
    assert not errors and json.loads(target.read_text())["i"] == 149
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_an_altered_checkpoint_is_refused(tmp_path, one_epoch_run):
    path = tmp_path / "last.ckpt"
    shutil.copy(one_epoch_run / "checkpoints" / "last.ckpt", path)
    checkpoint = torch.load(path, weights_only=True)
    weights = checkpoint["state_dict"]["net.0.weight"]
    data = bytearray(path.read_bytes())
    at = data.find(weights.numpy().tobytes()[:64]) + 2
    data[at] ^= 0x10  # one flipped bit inside a weight, in the file itself
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="its checksum does not match its contents"):
        train(tmp_path / "eval", "train=false", f"ckpt_path={path}")
    checkpoint["state_dict"]["net.0.weight"][0, 0] += 1e-3  # or a weight changed by a program, the checksum kept
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match="its checksum does not match its contents"):
        train(tmp_path / "eval2", "train=false", f"ckpt_path={path}")


def enospc_for_checkpoints(real):
    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".ckpt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    return fsync


def test_a_full_disk_stops_the_run_in_one_line_with_a_status_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(atomic.os, "fsync", enospc_for_checkpoints(os.fsync))
    with pytest.raises(SystemExit) as stopped:
        main(compose_config([*QUIET, "trainer.max_epochs=1"], tmp_path / "run"))
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: cannot write ") and ".ckpt: the disk is full: free space" in line
    assert json.loads((tmp_path / "run" / "failure.json").read_text())["status"] == "failed"
    assert not list((tmp_path / "run").rglob("*.ckpt")) and not list((tmp_path / "run").rglob("*.tmp"))


def test_a_read_only_checkpoints_folder_is_refused_before_training(tmp_path, monkeypatch, capsys):
    real = atomic.tempfile.mkstemp

    def mkstemp(*args, dir, **kwargs):
        if Path(dir).name == "checkpoints":
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    with pytest.raises(SystemExit) as stopped:
        main(compose_config([*QUIET, "trainer.max_epochs=1"], tmp_path / "run"))
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "checkpoints/.write-test: the filesystem is read-only" in line
    assert json.loads((tmp_path / "run" / "failure.json").read_text())["status"] == "failed"


# ---- 6. every stop is recorded ----------------------------------------------------------------------


def start(cwd: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:{TESTS}"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def pause(hook: str, marker: Path, occurrence: int = 1) -> list[str]:
    return ["+callbacks.pause._target_=pause_callback.Pause", f"+callbacks.pause.hook={hook}",
            f"+callbacks.pause.marker={marker}", f"+callbacks.pause.occurrence={occurrence}"]  # fmt: skip


def signal_when(process: subprocess.Popen, marker: Path, sig: int) -> str:
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return stderr


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_stop_in_the_test_phase_is_recorded_and_the_printed_command_finishes_the_run(tmp_path, sig, code, name):
    run_dir = tmp_path / "runs=a,b"  # `=` and `,`: the resume command must quote it for Hydra and the shell
    process = start(tmp_path, "trainer.max_epochs=2", *QUIET, f"hydra.run.dir='{run_dir}'",
                    *pause("on_test_start", tmp_path / "paused"))  # fmt: skip
    stderr = signal_when(process, tmp_path / "paused", sig)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    assert f"interrupted by {name}" in line and "during test;" in line
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["phase"] == "test" and "test/acc" not in record
    assert record["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert torch.load(record["checkpoint"], weights_only=True)["global_step"] == 12  # training had finished
    if sig == signal.SIGINT:
        return  # one resume is enough: the command is the same
    command = line.split("resume with: ", 1)[1]
    assert command == record["resume"]
    env = {**os.environ, "PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:{TESTS}"}
    command = command.replace("python train.py", f"{sys.executable} {ROOT / 'train.py'}", 1)
    resumed = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finished = json.loads((run_dir / "metrics.json").read_text())
    assert finished["status"] == "ok" and "test/acc" in finished and "val/loss" in finished
    assert finished["steps"] == 12 and finished["resumed_from"]["step"] == 12


@pytest.mark.slow
def test_a_stop_in_distillations_second_run_resumes_the_recipe(tmp_path):
    """teacher (2 epochs) -> kd student, stopped at the start of its second epoch -> resumed: the
    teacher is kept as it was, the kd student resumed from its last.ckpt, the hard one trained."""
    common = ["experiment=distill", "trainer.max_epochs=2", *QUIET, "distill.teacher_model.hidden=[16]"]
    process = start(tmp_path, *common, "hydra.run.dir=run", *pause("on_train_epoch_start", tmp_path / "p", 4))
    stderr = signal_when(process, tmp_path / "p", signal.SIGINT)
    assert process.returncode == 130, stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["checkpoint"].endswith("kd/checkpoints/last.ckpt")
    assert record["resume"].endswith("ckpt_path=last")
    teacher = (tmp_path / "run" / "teacher" / "metrics.json").read_bytes()
    main(compose_config([*common, "ckpt_path=last"], tmp_path / "run"))  # `python train.py ...`, in-process
    assert (tmp_path / "run" / "teacher" / "metrics.json").read_bytes() == teacher
    kd = json.loads((tmp_path / "run" / "kd" / "metrics.json").read_text())
    assert kd["resumed_from"]["epochs"] == 1 and kd["epochs"] == 2
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["status"] == "ok" and {"teacher/test/acc", "kd/test/acc", "hard/test/acc"} <= set(final)


@pytest.mark.parametrize("override", ["trainer.max_steps=0", "+trainer.limit_train_batches=0"])
def test_a_run_that_can_take_no_optimizer_step_is_refused(tmp_path, override):
    with pytest.raises(ConfigError, match="take no optimizer step"):
        train(tmp_path / "run", override)
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---- 7. sweeps survive being killed -------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_sweep_run_again_skips_finished_jobs_and_finishes_with_its_report(tmp_path):
    from lossheads.report.markdown import write_report

    sweep = ["-m", "seed=1,2,3", "trainer.max_epochs=1", *QUIET, "hydra.sweep.dir=sweep"]
    process = start(tmp_path, *sweep, *pause("on_train_epoch_start", tmp_path / "p", 2))  # in job 1
    stderr = signal_when(process, tmp_path / "p", signal.SIGTERM)
    assert process.returncode == 143, stderr[-3000:]
    folder = tmp_path / "sweep"
    assert json.loads((folder / "0" / "metrics.json").read_text())["status"] == "ok"
    assert json.loads((folder / "1" / "metrics.json").read_text())["status"] == "interrupted"
    assert not (folder / "2").exists() and not (folder / "report.md").exists()
    assert not list(folder.rglob(LOCK_NAME))  # the jobs' and the sweep's locks are gone with the sweep
    report = write_report(folder).read_text()  # by hand: the job that never ran is listed
    assert "| missing | never ran: the sweep was stopped before it" in report
    finished = (folder / "0" / "metrics.json").read_bytes()
    again = start(tmp_path, *sweep, *pause("on_train_epoch_start", tmp_path / "p", 2))
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert (folder / "0" / "metrics.json").read_bytes() == finished  # skipped, not retrained
    records = [json.loads((folder / str(n) / "metrics.json").read_text()) for n in range(3)]
    assert [r["status"] for r in records] == ["ok"] * 3 and [r["seed"] for r in records] == [1, 2, 3]
    assert "3 ok" in (folder / "report.md").read_text()


# ---- 8. inputs that ended in tracebacks, and silent wrong inputs ---------------------------------------


def table(tmp_path: Path, header: str, label: int = 1, encoding: str = "utf-8") -> str:
    rows = [f"{i % 7},{i % 5},{i % 2}" for i in range(40)]
    rows[0] = f"0,0,{label}"
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding=encoding)
    return str(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=4294967296"], "seed=4294967296 is not valid: use a whole number in [0, 4294967295]"),
        (["data.split_seed=100000000000000"], "data.split_seed=100000000000000 is not valid: use a whole number in"),
        (["+optimizer.betas=[0.9,1.5]"], "optimizer: Invalid beta parameter at index 1: 1.5: fix the optimizer.*"),
        (["+optimizer.foo=1"], "optimizer: AdamW.__init__() got an unexpected keyword argument 'foo'"),
        (["+data.nope=3"], "data: ArrayDataModule.__init__() got an unexpected keyword argument 'nope': fix the data"),
        (["scheduler=cosine", "+scheduler.x=2"], "scheduler: Cosine.__init__() got an unexpected keyword argument"),
        (["+logger.bogus=1"], "logger: TensorBoard got an unexpected keyword argument 'bogus': fix the logger.*"),
        (["model._target_=lossheads"], "model._target_='lossheads' could not be built (Expected a callable target"),
        (["optimizer._target_=torch.optim.NoSuch"], "optimizer._target_='torch.optim.NoSuch' cannot be built ("),
        (["data._target_=nosuch.X"], "data._target_='nosuch.X' cannot be built ("),
        (["scheduler._target_=os.path"], "scheduler._target_='os.path' cannot be built (Expected a callable"),
        (["model.hidden=64"], "could not be built ('int' object is not iterable)"),
        (["trainer.devices=5000", "trainer.accelerator=cpu"], "trainer.devices=5000 is not valid: this machine has"),
        (["+trainer.num_nodes=2"], "trainer.num_nodes=2 is not valid: several nodes need a cluster launcher"),
    ],
)  # fmt: skip
def test_inputs_that_ended_in_tracebacks_are_refused_in_one_line(tmp_path, overrides, message, monkeypatch):
    for env in ("SLURM_NTASKS", "SLURM_JOB_NAME", "LSB_JOBID", "TORCHELASTIC_RUN_ID", "MASTER_ADDR"):
        monkeypatch.delenv(env, raising=False)
    if overrides[0].startswith("CSV:"):
        _, header, *rest = overrides[0].split(":")
        encoding, label = [*rest, "utf-8", "1"][0], [*rest[1:], "1"][0]
        path = table(tmp_path, header, int(label), encoding)
        overrides = ["data=csv", f"data.path={path}", "data.label_columns=[label]", *overrides[1:]]
    with pytest.raises(ConfigError) as refused:
        train(tmp_path / "run", *overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---- 9. advice that is true -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "scale", "advice"),
    [
        ([], float("inf"), "step 0: before any update, so not the learning rate: check the inputs"),
        (["trainer.precision=16-true"], 1e4, "half precision (trainer.precision=16-true) overflowed: use bf16-mixed"),
    ],
)  # fmt: skip
def test_a_non_finite_loss_blames_what_caused_it(tmp_path, overrides, scale, advice):
    from conftest import built
    from lossheads.training.module import Diverged

    overrides = [*QUIET, "trainer.max_epochs=1", "trainer.accelerator=cpu", *overrides]
    datamodule, module, trainer = built(overrides, tmp_path)
    with torch.no_grad():
        for parameter in module.net.parameters():
            parameter.mul_(scale)
    with pytest.raises(Diverged, match=re.escape(advice)):
        trainer.fit(module, datamodule=datamodule)


@pytest.mark.slow
def test_a_stop_within_an_epoch_resumes_exactly(tmp_path):
    """Stopped in epoch 2's third step, the run keeps epoch 1's end and trains epoch 2 again from its
    start: its numbers and step count equal an unbroken run's (it once took the epoch's steps twice)."""
    common = ["trainer.max_epochs=3", "steps_per_call=1", "seed=1", *QUIET]
    run_dir = tmp_path / "b"
    process = start(tmp_path, *common, f"hydra.run.dir={run_dir}",
                    *pause("on_train_batch_end", tmp_path / "paused", occurrence=9))  # 6 steps an epoch  # fmt: skip
    train(tmp_path / "a", *common)  # unbroken, in-process, while the process starts
    stderr = signal_when(process, tmp_path / "paused", signal.SIGINT)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    assert "interrupted by Ctrl-C" in line and "during train;" in line
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "test/acc" not in record
    assert line.endswith(f"resume with: {record['resume']}") and record["resume"].endswith("ckpt_path=last")
    saved = torch.load(record["checkpoint"], weights_only=True)
    assert saved["global_step"] == 6 and "rng_state" in saved  # epoch 1's end, with its random state
    # the printed command, in-process (test_a_stop_in_the_test_phase runs one through the shell)
    words = shlex.split(record["resume"])
    assert words[:2] == ["python", "train.py"] and f"hydra.run.dir='{run_dir}'" in words
    main(compose_config([w for w in words[2:] if not w.startswith("hydra.run.dir=")], run_dir))
    assert not (run_dir / "checkpoints" / "interrupted.ckpt").exists()
    ours, theirs = (
        json.loads((run_dir / "metrics.json").read_text()),
        json.loads((tmp_path / "a" / "metrics.json").read_text()),
    )
    assert ours["steps"] == theirs["steps"] == 18
    for key in [k for k in theirs if "/" in k]:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
