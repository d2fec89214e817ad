"""Robust runs: exact resume after SIGKILL, SIGINT, atomic saves, NaN stop, DDP, zoo eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from tests.helpers import stop_at
from zoo import checkpoint
from zoo.cli import cli
from zoo.io import read_jsonl

RECIPE = """
name: robust
model: {dim: 32, depth: 2, heads: 2}
data:
  dataset: {shapes: {train_size: 1024, val_size: 256, test_size: 256}}
  batch_size: 64
  eval_batch_size: 256
  augment: [{random_crop: {padding: 2}}, hflip, {mixup: {p: 0.5}}]
train: {epochs: EPOCHS, lr: 2.0e-3, warmup_epochs: 1, deterministic: true, device: cpu, ema: 0.9}
log: {progress: false}
"""


def recipe(tmp_path: Path, epochs: int = 4, extra: str = "") -> Path:
    path = tmp_path / "robust.yaml"
    path.write_text(RECIPE.replace("EPOCHS", str(epochs)) + extra)
    return path


def zoo(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.02)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run that the interrupted ones must match bit for bit."""
    tmp = tmp_path_factory.mktemp("ref")
    out = tmp / "run"
    code, _, err = finish(zoo("run", str(recipe(tmp)), "--out", str(out)))
    assert code == 0, err
    return out


def test_sigkill_after_checkpoint_then_resume_is_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    proc = zoo("run", str(recipe(tmp_path)), "--out", str(out))
    wait_for(out / "checkpoints" / "last", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    code, _, err = finish(zoo("run", "--resume", str(out)))
    assert code == 0, err
    assert_identical(weights(out), weights(reference))
    assert_same_training_state(out, reference)
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def assert_same_training_state(run: Path, reference: Path) -> None:
    """Not only the weights: the EMA weights and the optimizer's moments match too (a resume
    that forgot to restore either would still end with identical raw weights)."""
    last, ref = run / "checkpoints" / "last", reference / "checkpoints" / "last"
    assert_identical(load_file(last / "ema.safetensors"), load_file(ref / "ema.safetensors"))
    a = checkpoint.load_state(last / "state.pt")["optimizer"]["state"]
    b = checkpoint.load_state(ref / "state.pt")["optimizer"]["state"]
    assert a.keys() == b.keys() and a
    for k in a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a[k][name], b[k][name]), (k, name)


def test_sigint_saves_prints_resume_and_continues_exactly(tmp_path, reference):
    out = tmp_path / "run"
    proc = zoo("run", str(recipe(tmp_path)), "--out", str(out))
    wait_for(out / "metrics.jsonl", proc)
    time.sleep(0.3)  # somewhere inside epoch 2
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    assert f"zoo run --resume {out}" in err
    # the signal saved a checkpoint where it arrived, inside epoch 2 (16 steps an epoch)
    saved = checkpoint.load_state(out / "checkpoints" / "last" / "state.pt")["step"]
    assert 16 < saved < 32, saved
    code, _, err = finish(zoo("run", "--resume", str(out)))
    assert code == 0, err
    assert_identical(weights(out), weights(reference))
    assert_same_training_state(out, reference)


def test_sigterm_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = zoo("run", str(recipe(tmp_path)), "--out", str(out))
    wait_for(out / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 143, err
    assert (out / "checkpoints" / "last" / "state.pt").exists()


def test_kill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints"
    good = {"w": torch.arange(4.0)}
    checkpoint.save(ckpt, 1, good, {"step": 1})
    script = f"""
import os, torch
from zoo import checkpoint
real = torch.save
def dying_save(obj, f, *a, **k):
    with open(f, "wb") as fh:
        fh.write(b"half a file")
    os._exit(9)
torch.save = dying_save
checkpoint.save(__import__("pathlib").Path({str(ckpt)!r}), 2, {{"w": torch.zeros(4)}}, {{"step": 2}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    last = ckpt / "last"
    assert torch.equal(checkpoint.load_weights(last / "model.safetensors")["w"], good["w"])
    assert checkpoint.load_state(last / "state.pt")["step"] == 1
    checkpoint.save(ckpt, 3, good, {"step": 3})  # the next save cleans the debris
    assert sorted(p.name for p in ckpt.iterdir()) == ["last", "step-00000003"]


NAN_PLUGIN = '''
import torch
from torch import nn

from zoo.registry import register

CALLS = [0]


@register("attention", "nan_later")
class NanLater(nn.Module):
    """Identity attention whose output turns NaN after `after` training calls."""

    def __init__(self, dim: int, after: int = 10):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.after = after

    def forward(self, x):
        if self.training:
            CALLS[0] += 1
        bad = self.training and CALLS[0] > self.after
        return self.proj(x) * (float("nan") if bad else 1.0)
'''


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    (tmp_path / "nan_later.py").write_text(NAN_PLUGIN)
    # 16 steps per epoch, 2 layers -> the loss turns NaN in epoch 2, after epoch 1 saved.
    path = recipe(tmp_path, extra="plugins: [nan_later.py]\n")
    out = tmp_path / "run"
    code, _, err = finish(zoo("run", str(path), "--out", str(out),
                              "--set", "model.attention={nan_later: {after: 40}}"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "non-finite" in lines[0] and "Traceback" not in err
    assert "checkpoints/last" in lines[0]
    state = checkpoint.load_state(out / "checkpoints" / "last" / "state.pt")
    assert state["step"] == 16
    assert all(torch.isfinite(v).all() for v in weights(out).values())


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00garbage" + data[8:])


@pytest.mark.parametrize("how", ["truncate", "garbage"])
@pytest.mark.parametrize("which", ["model.safetensors", "state.pt"])
def test_corrupt_checkpoint_is_one_line_on_resume(reference, tmp_path, how, which):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(reference), str(run)], check=True)
    corrupt(run / "checkpoints" / "last" / which, how)
    code, _, err = finish(zoo("run", "--resume", str(run)))
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert which in err and ("corrupt" in err or "truncated" in err)


@pytest.mark.parametrize("format_", [None, 2])
def test_a_checkpoint_of_another_format_is_one_line_on_resume(reference, tmp_path, format_):
    """state.pt carries its format version; one this zoo does not read (none: an older zoo,
    2: a newer one) is refused in one line naming both formats, not read by guesswork."""
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(reference), str(run)], check=True)
    path = (run / "checkpoints" / "last" / "state.pt").resolve()
    state = torch.load(path, weights_only=True)
    assert state["format"] == checkpoint.FORMAT
    if format_ is None:
        del state["format"]
    else:
        state["format"] = format_
    torch.save(state, path)
    code, _, err = finish(zoo("run", "--resume", str(run)))
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err
    found = "none (written by an older zoo)" if format_ is None else "2 (written by another zoo)"
    assert f"checkpoint format {found}; this zoo reads format {checkpoint.FORMAT}" in err


def test_resume_with_an_edited_recipe_is_one_line(reference, tmp_path):
    """Weights of another shape: the first tensor that does not fit is named, exit 2."""
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(reference), str(run)], check=True)
    text = (run / "recipe.yaml").read_text()
    assert "dim: 32" in text
    (run / "recipe.yaml").write_text(text.replace("dim: 32", "dim: 48"))
    code, _, err = finish(zoo("run", "--resume", str(run)))
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err
    assert "shape" in err and "recipe.yaml" in err


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run directory" in result.output and "Traceback" not in result.output


def test_zoo_eval_on_a_run(reference):
    result = CliRunner().invoke(cli, ["eval", str(reference), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "test accuracy:" in result.output and "circle" in result.output
    report = json.loads((reference / "eval_test.json").read_text())
    assert report["images"] == 256 and 0.0 <= report["acc"] <= 1.0
    assert len(report["per_class_acc"]) == 10
    assert sum(map(sum, report["confusion"])) == 256
    assert (reference / "figures" / "confusion_test.png").stat().st_size > 1000
    last = (reference / "checkpoints" / "last").resolve()
    assert f"checkpoint: {last}" in result.output and report["checkpoint"] == str(last)
    # A checkpoint folder works as well as the run dir, and agrees.
    again = CliRunner().invoke(cli, ["eval", str(reference / "checkpoints" / "best")])
    assert again.exit_code == 0, again.output
    # The value: evaluating the last checkpoint on val gives the run's own final val acc
    # (EMA weights both times, same images, CPU arithmetic is deterministic).
    val = CliRunner().invoke(cli, ["eval", str(reference), "--split", "val"])
    summary = json.loads((reference / "summary.json").read_text())
    assert json.loads((reference / "eval_val.json").read_text())["acc"] == pytest.approx(
        summary["final_val_acc"], abs=1e-9), val.output
    best = CliRunner().invoke(cli, ["eval", str(reference), "--split", "val", "--checkpoint", "best"])
    assert f"checkpoint: {(reference / 'checkpoints' / 'best').resolve()}" in best.output
    assert json.loads((reference / "eval_val.json").read_text())["acc"] == pytest.approx(
        summary["best_val_acc"], abs=1e-9)


def test_zoo_eval_corrupt_weights_is_one_line(reference, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(reference), str(run)], check=True)
    corrupt(run / "checkpoints" / "last" / "ema.safetensors", "truncate")
    result = CliRunner().invoke(cli, ["eval", str(run)])
    assert result.exit_code == 2 and "corrupt or truncated" in result.output


def test_ddp_two_processes_gloo_then_resume_in_one(tmp_path):
    out = tmp_path / "ddp"
    path = recipe(tmp_path, epochs=3)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(29500 + os.getpid() % 1000)]
    proc = subprocess.Popen([*torchrun, "-m", "zoo", "run", str(path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for(out / "checkpoints" / "last", proc, timeout=300)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = checkpoint.load_state(out / "checkpoints" / "last" / "state.pt")
    assert state["world_size"] == 2 and state["step"] >= 16
    code, _, err = finish(zoo("run", "--resume", str(out)))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 48


# --------------------------------------------------------------------------- signals at epoch ends


def trainer_for(tmp_path: Path, epochs: int):
    from zoo.recipe import load_recipe
    from zoo.registry import discover
    from zoo.train.trainer import Trainer

    discover()
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    r = load_recipe(recipe(tmp_path, epochs), ["train.eval_every=1", "log.tensorboard=false"])
    (run / "recipe.yaml").write_text(r.to_yaml())  # a run dir, as zoo run makes it
    return Trainer(r, run), run


@pytest.mark.parametrize("where", ["epoch_end", "final_step"])
def test_a_signal_on_an_epochs_last_step_still_gets_that_epoch_evaluated(tmp_path, where):
    """The epoch's evaluation is owed to the resumed run, with the train metrics of all its
    steps; at the final step the resumed run still ends with its accuracy, not null."""
    from zoo.train.launch import restore
    from zoo.train.trainer import Interrupted

    t, run = trainer_for(tmp_path, epochs=2)
    spe = t.steps_per_epoch
    at = spe if where == "epoch_end" else 2 * spe
    stop_at(t, at)
    with pytest.raises(Interrupted):
        t.fit()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == ([] if at == spe else [spe])
    saved = checkpoint.load_state(run / "checkpoints" / "last" / checkpoint.STATE_FILE)
    assert saved["step"] == at and saved["closed_step"] == at - spe

    resumed, _ = trainer_for(tmp_path, epochs=2)
    restore(resumed, run)
    summary = resumed.fit()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [spe, 2 * spe]
    assert all(r["steps"] == spe for r in rows)  # the interrupted epoch counts all its steps
    assert summary["final_val_acc"] == rows[-1]["val_acc"] is not None
    assert summary["wall_time"] >= saved["train_seconds"]  # earlier segments included


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    from zoo.train.launch import fit

    t, run = trainer_for(tmp_path, epochs=1)
    first = t.fit()
    (run / "summary.json").write_text(json.dumps(first))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    again = fit(t.recipe, run, resume=True)
    assert "finished already" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert again["final_val_acc"] == first["final_val_acc"]


def test_one_run_trains_in_one_process_at_a_time(tmp_path):
    """A second `zoo run --resume` of a run being trained is one line, exit 2; the lock goes
    with the process that held it."""
    from zoo.runs import lock_run

    out = tmp_path / "run"
    proc = zoo("run", str(recipe(tmp_path, epochs=50)), "--out", str(out))
    wait_for(out / "checkpoints" / "last", proc)
    code, _, err = finish(zoo("run", "--resume", str(out)))
    assert code == 2 and "another zoo process is training this run" in err
    assert err.strip().count("\n") == 0
    proc.kill()
    proc.wait()
    lock_run(out).close()  # free again once the trainer died


def test_a_killed_sweep_takes_its_cell_with_it(tmp_path):
    """SIGKILL of `zoo sweep` leaves no cell training unwatched: the cell gets SIGTERM
    (checkpoints and stops), so its run dir's lock comes free."""
    from zoo.errors import ZooError
    from zoo.runs import lock_run

    base = recipe(tmp_path, epochs=5000)  # far longer than the test waits
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"base: {base}\ncells:\n  only: {{}}\n")
    sweep = zoo("sweep", str(sweep_file), "--out", str(tmp_path / "sw"))
    cell = tmp_path / "sw" / "only"
    wait_for(cell / "checkpoints" / "last", sweep)
    with pytest.raises(ZooError):
        lock_run(cell)  # the cell is training
    sweep.kill()
    sweep.wait()
    end = time.time() + 120
    while True:
        try:
            lock_run(cell).close()
            break
        except ZooError:
            assert time.time() < end, "the cell kept training after its sweep died"
            time.sleep(0.1)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 512 vs 448"),
    OSError(28, "No space left on device"),
])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error):
    ckpt = tmp_path / "checkpoints"
    good = {"w": torch.arange(4.0)}
    checkpoint.save(ckpt, 1, good, {"step": 1})

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(checkpoint.ZooError) as e:
        checkpoint.save(ckpt, 2, {"w": torch.zeros(4)}, {"step": 2})
    msg = str(e.value)
    assert "\n" not in msg and "disk full" in msg and "step-00000001 is intact" in msg
    assert sorted(p.name for p in ckpt.iterdir()) == ["last", "step-00000001"]  # no debris
    assert torch.equal(checkpoint.load_weights(ckpt / "last" / "model.safetensors")["w"], good["w"])


def test_a_broken_last_link_resumes_from_the_newest_complete_step(tmp_path):
    """A dangling checkpoints/last neither stops a resume nor makes a sweep restart (and
    delete) a cell that has intact checkpoints."""
    from zoo.study.sweep import cell_state

    ckpt = tmp_path / "run" / "checkpoints"
    checkpoint.save(ckpt, 1, {"w": torch.zeros(1)}, {"step": 1})
    checkpoint.save(ckpt, 2, {"w": torch.ones(1)}, {"step": 2})
    (tmp_path / "run" / "recipe.yaml").write_text("name: x\n")
    (ckpt / "last").unlink()
    (ckpt / "last").symlink_to("step-00000009")  # dangling
    assert checkpoint.newest(ckpt) == ckpt / "step-00000002"
    assert cell_state(tmp_path / "run") == "resume"


def test_a_kill_between_the_link_updates_leaves_last_on_the_previous_step(tmp_path, monkeypatch):
    """`best` moves first: a kill before `last` moves leaves `last` on the step before, so
    the resumed run redoes this step and saves it again, best link included."""
    ckpt = tmp_path / "checkpoints"
    checkpoint.save(ckpt, 1, {"w": torch.zeros(1)}, {"step": 1}, best=True)
    real = checkpoint._point

    def killed_at_last(link, target):
        if link.name == "last":
            raise KeyboardInterrupt  # the process dies here
        real(link, target)

    monkeypatch.setattr(checkpoint, "_point", killed_at_last)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(ckpt, 2, {"w": torch.ones(1)}, {"step": 2}, best=True)
    assert os.readlink(ckpt / "last") == "step-00000001"
    assert os.readlink(ckpt / "best") == "step-00000002"


def test_zoo_eval_writes_elsewhere_with_out(reference, tmp_path, monkeypatch):
    """--out keeps a run dir untouched (it may be read-only); a run dir that refuses the
    write is one line pointing at --out."""
    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}

    before = files()
    result = CliRunner().invoke(cli, ["eval", str(reference), "--split", "test",
                                      "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ev" / "eval_test.json").is_file()
    assert (tmp_path / "ev" / "figures" / "confusion_test.png").is_file()
    assert files() == before

    from zoo import evaluate

    def read_only(path, obj):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(evaluate, "write_json", read_only)
    refused = CliRunner().invoke(cli, ["eval", str(reference), "--split", "test"])
    assert refused.exit_code == 2 and "--out DIR" in refused.output
    assert "Permission denied" in refused.output and "Traceback" not in refused.output


def test_two_ddp_processes_reach_the_weights_of_one_at_the_same_global_batch(tmp_path):
    """Without random augmentation, 2 ranks of 32 images see exactly the images of one
    process's batch of 64 and average the same gradient: the same weights, to float
    rounding. Only rank 0 writes: one metrics line per evaluation, one checkpoint per save."""
    path = recipe(tmp_path, epochs=1, extra="")
    plain = path.read_text().replace(
        "augment: [{random_crop: {padding: 2}}, hflip, {mixup: {p: 0.5}}]", "augment: []")
    path.write_text(plain.replace("ema: 0.9", "ema: null"))
    one, two = tmp_path / "one", tmp_path / "two"
    code, _, err = finish(zoo("run", str(path), "--out", str(one)))
    assert code == 0, err
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(30500 + os.getpid() % 1000)]
    proc = subprocess.run([*torchrun, "-m", "zoo", "run", str(path), "--out", str(two)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)
    assert len(read_jsonl(two / "metrics.jsonl")) == 1
    assert proc.stdout.count("done:") == 1  # rank 1 prints nothing of its own
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(
        p.name for p in (one / "checkpoints").iterdir())
