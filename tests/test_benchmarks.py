"""The benchmarks run (tiny, on the CPU) and say what they measured; gpu_check's every stage."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import bench_train, gpu_check
from benchmarks.cifar_files import write_cifar10
from tests.conftest import ROOT


def test_peak_flops_are_looked_up_by_the_exact_gpu_name():
    assert bench_train.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench_train.peak_tflops("NVIDIA H100 PCIe") == 756.0  # not the SXM part's peak
    assert bench_train.peak_tflops("NVIDIA A10") == 125.0
    assert bench_train.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    for unknown in ("NVIDIA H100", "NVIDIA A10G", "NVIDIA GeForce RTX 4090", ""):
        assert bench_train.peak_tflops(unknown) is None, unknown


def test_bench_models_compares_both_pairs_with_timm():
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_models.py", "--device", "cpu", "--repeats", "1",
         "--steps", "1", "--warmup", "0", "--batch", "2", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert [(r["model"], r["mode"]) for r in result["rows"]] == [
        ("ViT", "train"), ("ViT", "infer"), ("Diff-ViT", "train"), ("Diff-ViT", "infer")]
    assert all(r["zoo_img_s"] > 0 and r["timm_img_s"] > 0 for r in result["rows"])
    assert set(result["diff_cost"]) == {"train", "infer"}


def test_bench_train_times_the_pipeline_and_the_step(tmp_path):
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_train.py", "--device", "cpu", "--n", "600",
         "--batch-size", "64", "--repeats", "1", "--train-steps", "1", "--train-batch-size", "8",
         "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
         "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [p["augment"] for p in result["pipeline"]] == [
        [], bench_train.CIFAR_AUGMENT, bench_train.CIFAR_AUGMENT_MIX]
    (step,) = result["train_steps"]
    assert step["images_per_s"] > 0 and step["setup_s"] > 0 and step["mfu"] is None
    assert step["step_mode"] == "eager"
    assert step["params"] < 100_000  # the --set overrides reached the model


def test_generated_cifar_files_read_as_cifar10(tmp_path):
    from zoo.data import build_datasets
    from zoo.registry import discover

    discover()
    write_cifar10(tmp_path, n_train=50, n_test=20)
    spec = {"cifar10": {"download": False, "val_size": 0}}
    sets = build_datasets(spec, ["train", "test"], img_size=32, root=str(tmp_path))
    assert (len(sets["train"]), len(sets["test"])) == (50, 20)
    assert sets["train"].classes[0] == "airplane"
    # learnable: images of one class are closer to each other than to other classes
    x, y = sets["train"].images.float().flatten(1), sets["train"].labels
    means = [x[y == c].mean(0) for c in range(10) if (y == c).sum() > 1]
    assert len(means) >= 5 and min(
        float((a - b).norm()) for i, a in enumerate(means) for b in means[i + 1:]) > 100


def test_gpu_check_runs_every_stage_quick_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    report = json.loads((out / "gpu_check.json").read_text())
    failed = {k: s.get("error") for k, s in report["stages"].items() if s["status"] != "ok"}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:])
    assert list(report["stages"]) == list(gpu_check.STAGES)
    stages = {k: s["result"] for k, s in report["stages"].items()}
    assert stages["cuda_tests"]["tests"] > 0  # collected (and skipped: no GPU here)
    assert len(stages["bench_models"]["rows"]) == 4
    assert [s["recipe"] for s in stages["bench_train"]["steps"]] == [
        "recipes/vit_p4.yaml", "recipes/diffvit_p4.yaml"]
    run = stages["zoo_run"]
    assert run["summary"]["status"] == "finished" and run["epochs_at_kill"] >= 1
    assert run["test_acc"][-1] > 0.15 and run["viz_pngs"]  # learnable data: above chance (0.1)
    assert {r["mode"] for r in stages["fp16_profile"]["latency"]} == {"fp32", "amp-bf16"}
    md = (out / "gpu_check.md").read_text()
    for name in gpu_check.STAGES:
        assert f"| {name} | ok |" in md
    assert "## zoo_run" in md and "killed (SIGKILL)" in md
    assert (out / "gpu_check.log").stat().st_size > 0
