"""`zoo fp16-profile` (tools/fp16/) on CPU with a tiny random CLIP."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys

import pytest
import torch
from torch import nn
from zoo_tools.clip_common import images, models
from zoo_tools.fp16 import environment, impact, measure, report, settings
from zoo_tools.fp16 import run as fp16_run

from tests.conftest import ROOT
from tests.helpers import record_atomic_writes, zoo_cli
from zoo.errors import ZooError

TINY = models.ClipArch(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8,
                   vision_patch_size=None, transformer_width=64, transformer_heads=1, transformer_layers=2)
CPU = torch.device("cpu")


@pytest.fixture
def tiny_clip(monkeypatch) -> str:
    monkeypatch.setitem(models.CLIP_ARCHS, "tiny", TINY)
    return "tiny"


def _one_line_error(argv: list[str]) -> str:
    result = zoo_cli("fp16-profile", *argv)
    err = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(err) == 1 and err[0].startswith("error: "), result.output
    return err[0]


def test_latency_stats_median_p90_throughput():
    stats = measure.latency_stats([float(v) for v in (10, 1, 9, 2, 8, 3, 7, 4, 6, 5)])
    assert stats["median_ms"] == 5.5
    assert stats["p90_ms"] == pytest.approx(9.1)  # rank 0.9 * 9 = 8.1 between 9 and 10
    assert (stats["mean_ms"], stats["min_ms"], stats["n"]) == (5.5, 1.0, 10)
    assert measure.throughput(8, 4.0) == 2000.0


def test_memory_arithmetic():
    assert measure.activation_bytes(peak_allocated=1000, resident=300) == 700
    assert measure.activation_bytes(peak_allocated=100, resident=300) == 0
    block = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))  # 15 + 6 params, 3 + 3 + 1 buffers
    assert measure.param_bytes(block) == (15 + 6) * 4 + (3 + 3) * 4 + 8  # num_batches_tracked is int64
    assert measure.param_bytes(block.half()) == (15 + 6 + 3 + 3) * 2 + 8


def test_timer_counts_repeats_and_runs_warmup():
    calls = []
    times = measure.time_forward(lambda: calls.append(1), warmup=2, repeats=3, device=CPU)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_profiling_leaves_the_model_unchanged():
    torch.manual_seed(0)
    visual = TINY.build().visual
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    rows = list(measure.profile(visual, list(settings.MODES.values()), [1, 2], resolution=32, device=CPU, warmup=0,
                           repeats=2, progress=False))
    assert [(r["mode"], r["batch"]) for r in rows] == [(m, b) for m in settings.MODES for b in (1, 2)]
    for r in rows:
        assert r["status"] == "ok" or r["status"].startswith("unsupported"), r
        if r["status"] == "ok":
            assert r["median_ms"] > 0 and r["img_per_s"] > 0 and "peak_allocated_bytes" not in r
    after = visual.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    half = {r["mode"]: r["params_bytes"] for r in rows}
    assert half["fp16"] < half["fp32"] == half["amp-fp16"]


class _NoHalf(nn.Module):
    """Stands in for a build without FP16 kernels on this device."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'\nmore detail')
        return self.linear(x.mean(dim=(2, 3)))


def test_unsupported_mode_is_reported_not_raised():
    modes = [settings.MODES["fp32"], settings.MODES["fp16"]]
    rows = list(measure.profile(_NoHalf(), modes, [1, 4], resolution=8, device=CPU, warmup=0, repeats=1, progress=False))
    assert [r["status"] for r in rows[:2]] == ["ok", "ok"]
    assert all(r["status"] == "unsupported: RuntimeError: \"addmm_impl_cpu_\" not implemented for 'Half'"
               for r in rows[2:])
    moved = dict(impact.prediction_impact(_NoHalf(), modes, torch.randn(2, 3, 8, 8), torch.eye(2), 1.0, CPU))
    assert moved["fp32"]["top1_agreement"] == 1.0 and moved["fp16"]["status"].startswith("unsupported")


def test_agreement_metrics_on_known_tensors():
    head = torch.eye(3)
    same = impact.agreement(torch.tensor([[2.0, 0, 0]]), torch.tensor([[2.0, 0, 0]]), head, logit_scale=1.0)
    assert same["top1_agreement"] == 1.0 and same["kl_mean"] == 0.0 and same["max_abs_prob_change"] == 0.0
    assert same["cosine_mean"] == pytest.approx(1.0)
    # logits [1, 0, 0] vs [0, 1, 0]: p = [e, 1, 1] / (e + 2) and q = [1, e, 1] / (e + 2)
    moved = impact.agreement(torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), torch.tensor([[0, 5.0, 0], [1.0, 0, 0]]),
                         head, logit_scale=1.0)
    e = math.e
    assert moved["top1_agreement"] == 0.5
    assert moved["max_abs_prob_change"] == pytest.approx((e - 1) / (e + 2))
    assert moved["mean_abs_prob_change"] == pytest.approx((e - 1) / (e + 2) / 2)
    assert moved["kl_mean"] == pytest.approx((e - 1) / (e + 2) / 2)  # KL(p||q) = (e - 1) / (e + 2)
    assert (moved["cosine_mean"], moved["cosine_min"]) == (pytest.approx(0.5), pytest.approx(0.0))
    assert moved["non_finite_embeddings"] == 0


def test_argument_parsing():
    assert settings.parse_batch_sizes("1,8,32") == [1, 8, 32]
    assert [m.name for m in settings.parse_modes("fp16, amp-bf16,fp16")] == ["fp16", "amp-bf16"]
    with pytest.raises(ZooError, match="did you mean amp-fp16"):
        settings.parse_modes("amp_fp16")


def test_bad_arguments_give_one_line_errors(tmp_path):
    out = ["--out", str(tmp_path)]
    assert "comma-separated positive integers" in _one_line_error([*out, "--batch-sizes", "1,x"])
    assert "comma-separated positive integers" in _one_line_error([*out, "--batch-sizes", "0,4"])
    assert "unknown mode 'int8'" in _one_line_error([*out, "--modes", "fp32,int8"])
    assert "unknown CLIP model 'RN49'" in _one_line_error([*out, "--clip-model", "RN49", "--device", "cpu"])
    assert "--device tpu" in _one_line_error([*out, "--device", "tpu"])
    assert "'many' is not one of 'auto', 'ensemble', 'single', 'name'" in _one_line_error(
        [*out, "--prompts", "many"])
    assert "'--repeats': 0 is not in the range x>=1" in _one_line_error([*out, "--repeats", "0"])
    assert "'--warmup': -1 is not in the range x>=0" in _one_line_error([*out, "--warmup", "-1"])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _one_line_error([*out, "--device", "cuda"])


def test_evaluation_images(tmp_path):
    preprocess = models.tool_package("clip").clip._transform(32)
    batch, note = impact.evaluation_images(None, preprocess, 32)
    assert batch.shape == (4, 3, 32, 32) and "scikit-image" in note
    folder = tmp_path / "imgs"
    folder.mkdir()
    with pytest.raises(ZooError, match="no readable images"):
        impact.evaluation_images(folder, preprocess, 32)
    (folder / "bad.png").write_bytes(b"nope")
    next(images.sample_photos())[1].save(folder / "good.jpg")
    batch, note = impact.evaluation_images(folder, preprocess, 32)
    assert batch.shape == (1, 3, 32, 32) and note.startswith("1 images")


def test_environment_on_cpu():
    env = environment.environment(CPU)
    assert env["gpu"] == env["driver"] == "n/a" and env["torch"] == torch.__version__ and env["cpu_count"] >= 1
    # zoo.runs.environment's record (zoo version, commit, ...), less argv: config.command says it
    assert {"zoo", "timm", "git_commit", "started"} <= env.keys() and "argv" not in env
    assert env["cpu"] and env["torch_threads"] >= 1 and "cudnn_allow_tf32" in env
    assert measure.device_memory_used(CPU) == (None, "n/a")


def test_end_to_end_tiny_model_writes_every_output(tmp_path, tiny_clip, monkeypatch):
    """`zoo fp16-profile` on a CPU: no progress bars where stderr is no terminal, the command as
    typed in the results, and no memory.png (a stale one removed), with the reason in results.md."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "memory.png").write_bytes(b"from an earlier run")
    written = record_atomic_writes(monkeypatch, fp16_run)
    args = ["--clip-model", tiny_clip, "--random-init", "--device", "cpu", "--batch-sizes", "1,2",
            "--warmup", "0", "--repeats", "2", "--out", str(out), "--seed", "3",
            "--cache-dir", str(tmp_path / "cache")]
    result = zoo_cli("fp16-profile", *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["latency.png", "results.json", "results.md"]
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert {out / "results.json", out / "results.md"} == {p for p in written if p.parent == out}
    assert "text prompts" not in result.output and "\r" not in result.output
    assert f"written: {out / 'results.md'}, results.json, latency.png\n" in result.output
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["latency"]) == 8 and saved["environment"]["device"] == "cpu" and not saved["interrupted"]
    assert saved["config"]["weights"] == "random init (seed 3), NOT pretrained"
    assert saved["config"]["command"] == shlex.join(["zoo", "fp16-profile", *args])
    assert saved["figures"] == ["latency.png"]
    assert set(saved["prediction_impact"]) == set(settings.MODES)
    assert saved["prediction_impact"]["fp32"]["top1_agreement"] == 1.0
    markdown = (out / "results.md").read_text()
    assert "RANDOM WEIGHTS" in markdown and "not meaningful" in markdown and "| amp-bf16 | 2 |" in markdown
    assert "memory.png)" not in markdown and "No memory.png: memory is measured by the CUDA caching " \
        "allocator, and this profile ran on cpu." in markdown
    assert saved["config"]["timing"].startswith("time.perf_counter")


def test_memory_figure_where_memory_is_measured(tmp_path):
    """On CUDA (rows as a GPU writes them) memory.png is drawn and results.md shows it."""
    cuda = torch.device("cuda", 0)
    rows = [{"mode": m, "batch": b, "status": "ok", "median_ms": 2.0 * b, "p90_ms": 3.0 * b,
             "img_per_s": 500.0, "mode_bytes": b * 2**20, "peak_allocated_bytes": 3 * b * 2**20}
            for m in ("fp32", "fp16") for b in (1, 4)]
    assert report.figure_files(cuda) == ["latency.png", "memory.png"]
    report.plot(rows, tmp_path, cuda, random_init=False)
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in report.figure_files(cuda))
    assert report._memory_figure({"figures": report.figure_files(cuda)}) == "![memory](memory.png)"


def test_cpu_sized_defaults():
    """What the user leaves out is sized for the device: RN50 at batch 256 takes minutes on a CPU."""
    assert settings.run_sizes("cpu") == ([1, 4], 2, 5)
    assert settings.run_sizes("cuda") == ([1, 8, 32, 128, 256], 10, 50)
    assert settings.run_sizes("cpu", "64", 0, 1) == ([64], 0, 1)
    help_text = " ".join(zoo_cli("fp16-profile", "--help").output.split())
    assert "default 1,8,32,128,256 on CUDA, 1,4 on CPU" in help_text
    assert "default 10 on CUDA, 2 on CPU" in help_text and "default 50 on CUDA, 5 on CPU" in help_text


def test_ctrl_c_writes_what_was_measured_and_exits_130(tmp_path, tiny_clip, monkeypatch):
    """Ctrl-C in the second timing: the first row is written (atomically), the run says so and
    exits 130. No sizes given on a CPU: the CPU defaults are used."""
    timed = []

    def timing(fn, *, warmup: int, repeats: int, device: torch.device) -> list[float]:
        timed.append((warmup, repeats))
        if len(timed) == 2:
            raise KeyboardInterrupt
        return [1.0] * repeats

    monkeypatch.setattr(measure, "time_forward", timing)
    written = record_atomic_writes(monkeypatch, fp16_run)
    out = tmp_path / "out"
    result = zoo_cli("fp16-profile", "--clip-model", tiny_clip, "--random-init", "--device", "cpu", "--out",
                     str(out), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 130 and timed == [(2, 5), (2, 5)], result.output
    assert {out / "results.json", out / "results.md"} <= set(written)
    saved = json.loads((out / "results.json").read_text())
    assert saved["interrupted"] and saved["config"]["batch_sizes"] == [1, 4]
    assert [(r["mode"], r["batch"], r["median_ms"]) for r in saved["latency"]] == [("fp32", 1, 1.0)]
    assert saved["prediction_impact"] == {}
    assert "Interrupted (Ctrl-C)" in (out / "results.md").read_text() and (out / "latency.png").exists()
    assert "interrupted: wrote what was measured before Ctrl-C (1 of 8 latency rows, 0 of 4" in result.output


def test_progress_bar_per_mode_on_a_terminal(monkeypatch, capsys):
    """The profile's bars are zoo's: one per mode on a terminal, none into a pipe."""
    shown = []
    for tty in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        rows = measure.profile(model, [settings.MODES["fp32"]], [1], resolution=2, device=CPU,
                               warmup=0, repeats=1)
        assert [r["status"] for r in rows] == ["ok"]
        shown.append("fp32" in capsys.readouterr().err)
    assert shown == [True, False]


@pytest.mark.parametrize("how", [["tools/fp16_profile.py"], ["-m", "tools.fp16_profile"]])
def test_script_runs_from_the_repository_root(how):
    """From a checkout without installing: the file or the module is the `zoo fp16-profile` command."""
    done = subprocess.run([sys.executable, *how, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: python {' '.join(how)} [OPTIONS]")
    help_text = " ".join(done.stdout.split())
    assert "1,4 on CPU" in help_text and "--no-progress" in help_text


class _OutOfMemoryFrom(nn.Module):
    """Raises CUDA's out-of-memory error from `batch` images on, as a full GPU would."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= self.batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.linear(x.mean(dim=(2, 3)))


def test_out_of_memory_is_a_row_status_and_smaller_batches_still_run():
    rows = list(measure.profile(_OutOfMemoryFrom(4), [settings.MODES["fp32"]], [1, 4, 2], resolution=8, device=CPU,
                           warmup=0, repeats=1, progress=False))
    assert [r["status"] for r in rows] == ["ok", "out of memory", "ok"]
    assert "median_ms" not in rows[1] and rows[2]["median_ms"] > 0


def test_cuda_timing_uses_events_not_the_host_clock(monkeypatch):
    """The CUDA branch, with fake events: each call is timed by a pair of recorded events."""
    log = []

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing
            self.t = None

        def record(self) -> None:
            self.t = len(log)
            log.append("record")

        def synchronize(self) -> None:
            log.append("sync")

        def elapsed_time(self, end: FakeEvent) -> float:
            return 1.5 * (end.t - self.t)  # ms between the two records: one call in between

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("device sync"))
    times = measure.time_forward(lambda: log.append("call"), warmup=1, repeats=2,
                            device=torch.device("cuda", 0))
    assert times == [3.0, 3.0]
    assert log == ["call", "device sync", "record", "call", "record", "sync",
                   "record", "call", "record", "sync"]
