"""One-shot GPU acceptance: every CUDA path of zoo run once, every speed number recorded.

    python benchmarks/gpu_check.py --out gpu_check                       # a GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/check # every stage, tiny

Stages, each in its own process (a broken stage is reported and the next one runs):

    env           card, driver, versions
    cuda_tests    the test suite's CUDA tests (`pytest -m cuda`)
    bench_models  benchmarks/bench_models.py: zoo's ViT / Diff-ViT steps against timm's
    bench_train   benchmarks/bench_train.py: the input pipeline; vit_p4 and diffvit_p4
                  training steps eager and compiled as one CUDA graph (img/s, epoch time,
                  MFU, seconds until the step is ready)
    zoo_run       a real `zoo run` of recipes/vit_p4.yaml on generated CIFAR-10 files (no
                  network), killed with SIGKILL after its first epoch, resumed to the end,
                  then `zoo eval` and `zoo viz` of the run
    fp16_profile  tools/fp16_profile.py --random-init: CLIP RN50's image encoder in
                  FP32 / FP16 / AMP

Writes DIR/gpu_check.json (every number), DIR/gpu_check.md (the same as tables) and
DIR/gpu_check.log (each stage's output), all three rewritten after every stage, so a run
cut short still leaves what it measured. Scratch files (data, runs) go to a temporary
folder. Nothing here needs the network.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: zoo and benchmarks from this checkout

from benchmarks.cifar_files import write_cifar10  # noqa: E402
from zoo.io import atomic_write, read_jsonl  # noqa: E402
from zoo.recipe import load_recipe  # noqa: E402

PY = sys.executable
STAGES = ("env", "cuda_tests", "bench_models", "bench_train", "zoo_run", "fp16_profile")
RECIPES = ("vit_p4", "diffvit_p4")
# A tiny model for --quick: every code path of the recipe, little arithmetic.
TINY_MODEL = ["model.dim=32", "model.depth=2", "model.heads=2", "model.mlp_ratio=2"]

ENV_CODE = """
import json, subprocess, torch
from zoo.runs import environment
env = environment()
env.pop("argv", None)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
    env["compute_capability"] = f"{p.major}.{p.minor}"
    env["multiprocessors"] = p.multi_processor_count
    env["cudnn"] = torch.backends.cudnn.version()
    try:
        env["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except OSError:
        env["driver"] = None
print(json.dumps(env))
"""


@dataclass
class Check:
    """What the stages share: where to write, how big to run, the log of every command."""

    out: Path
    work: Path
    device: str
    quick: bool
    compile: bool  # also time compiled training steps (minutes of compiling on a CPU)
    log: list[str]

    @staticmethod
    def env() -> dict[str, str]:
        """This checkout first on the path (then what the caller had), and no hub retries."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run a command to completion; its output goes to the log; a timeout raises."""
        tic = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  cwd=ROOT, env=self.env())
        except subprocess.TimeoutExpired as e:
            self._log(cmd, None, time.perf_counter() - tic, _text(e.stdout) + _text(e.stderr))
            raise StageError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from e
        self._log(cmd, proc.returncode, time.perf_counter() - tic, proc.stdout + proc.stderr)
        return proc

    def checked(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        proc = self.run(cmd, timeout)
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            raise StageError(f"exit {proc.returncode}: {' '.join(cmd[1:4])} ...: {tail[0]}")
        return proc

    def _log(self, cmd: list[str], rc: int | None, seconds: float, output: str) -> None:
        self.log.append(f"$ {' '.join(cmd)}\n# exit {rc}, {seconds:.1f} s\n{output.rstrip()}\n")

    def timeout(self, gpu_s: float) -> float:
        """A stage's limit: sized for an H100; CPU runs are tiny but slow, quick ones short."""
        return 600.0 if self.quick else gpu_s


class StageError(Exception):
    """A stage could not finish; the message says why in one line."""


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


# ---------------------------------------------------------------------------------------
# Stages: each returns a dict of results or raises


def stage_env(c: Check) -> dict:
    return json.loads(c.checked([PY, "-c", ENV_CODE], 120).stdout)


def stage_cuda_tests(c: Check) -> dict:
    xml = c.work / "cuda_tests.xml"
    proc = c.run([PY, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                  f"--junitxml={xml}", "tests"], c.timeout(240))
    if not xml.exists():
        raise StageError(f"pytest wrote no report (exit {proc.returncode})")
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [tc.get("classname", "") + "::" + tc.get("name", "")
              for tc in suite.iter("testcase")
              if tc.find("failure") is not None or tc.find("error") is not None]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    result = {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"]
              - counts["skipped"], "failed": failed}
    if failed:
        raise StageError(f"{len(failed)} CUDA test(s) failed: {', '.join(failed)}",) from None
    return result


def stage_bench_models(c: Check) -> dict:
    size = (["--repeats", "1", "--steps", "1", "--warmup", "1", "--batch", "8"] if c.quick
            else ["--repeats", "5", "--steps", "10", "--warmup", "5"])
    proc = c.checked([PY, "benchmarks/bench_models.py", "--device", c.device, "--json", *size],
                     c.timeout(150))
    return json.loads(proc.stdout)


def stage_bench_train(c: Check) -> dict:
    path = c.work / "bench_train.json"
    variants = "eager,compiled+graph" if c.compile else "eager"
    base = [PY, "benchmarks/bench_train.py", "--device", c.device, "--json", str(path),
            "--variants", variants]
    if c.quick:
        base += ["--n", "1000", "--batch-size", "64", "--repeats", "1", "--train-steps", "2",
                 "--train-batch-size", "16", *[f"--set={s}" for s in TINY_MODEL]]
    else:
        base += ["--train-steps", "300"]
    results: dict[str, Any] = {"pipeline": [], "steps": []}
    for recipe in RECIPES:  # one process per recipe: a crash in one leaves the other's numbers
        cmd = [*base, "--recipe", f"recipes/{recipe}.yaml"]
        c.checked(cmd + (["--no-pipeline"] if results["pipeline"] else []), c.timeout(240))
        got = json.loads(path.read_text())
        results["pipeline"] = results["pipeline"] or got["pipeline"]
        results["steps"] += got["train_steps"]
    return results


def full_schedule_samples(n_train: int) -> int:
    """Training samples of recipes/vit_p4.yaml's whole schedule (epochs x repeats x images)."""
    recipe = load_recipe(ROOT / "recipes" / "vit_p4.yaml")
    return recipe.train.epochs * recipe.data.repeats * n_train


def stage_zoo_run(c: Check) -> dict:
    n_train, n_test, epochs = (500, 100, 3) if c.quick else (50_000, 10_000, 4)
    data = c.work / "data"
    write_cifar10(data, n_train, n_test)
    run_dir = c.work / "run"
    sets = [f"data.root={data}",
            "data.dataset={cifar10: {download: false}}", "data.repeats=1",
            f"train.epochs={epochs}", "train.checkpoint_every=1", "train.eval_every=1",
            "train.warmup_epochs=1",
            f"train.device={c.device}", "log.progress=false"]
    if c.quick:
        sets += [*TINY_MODEL, "data.batch_size=50", "log.viz_images=2"]
    cmd = [PY, "-m", "zoo", "run", "recipes/vit_p4.yaml", "--out", str(run_dir),
           *[a for s in sets for a in ("--set", s)]]
    metrics = run_dir / "metrics.jsonl"

    # 1. train until the first evaluation is logged and its checkpoint is on disk (written
    # by a background thread, after the metrics), then SIGKILL inside the next epoch
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=c.env())
    deadline = tic + c.timeout(240)
    last = run_dir / "checkpoints" / "last"
    while (not read_jsonl(metrics) or not last.exists()) and proc.poll() is None \
            and time.perf_counter() < deadline:
        time.sleep(0.05)
    first_epoch_s = time.perf_counter() - tic
    killed = proc.poll() is None
    if killed:
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    c._log(cmd, proc.returncode, time.perf_counter() - tic, out)
    if not killed or not read_jsonl(metrics):
        raise StageError(f"the run ended (exit {proc.returncode}) before its first epoch was "
                         "logged; see gpu_check.log")
    epochs_at_kill = len(read_jsonl(metrics))

    # 2. resume to the end
    tic = time.perf_counter()
    c.checked([PY, "-m", "zoo", "run", "--resume", str(run_dir)], c.timeout(300))
    resume_s = time.perf_counter() - tic
    rows = read_jsonl(metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    if [r["epoch"] for r in rows] != list(range(1, epochs + 1)):
        raise StageError(f"metrics.jsonl after the resume has epochs {[r['epoch'] for r in rows]}")

    # 3. evaluate and draw the trained run
    ev = c.checked([PY, "-m", "zoo", "eval", str(run_dir), "--split", "test", "--device",
                    c.device], c.timeout(120))
    acc_line = next(line for line in ev.stdout.splitlines() if "accuracy:" in line)
    c.checked([PY, "-m", "zoo", "viz", str(run_dir)], c.timeout(120))
    pngs = sorted(p.name for p in (run_dir / "figures" / "viz").rglob("*.png"))
    if not pngs:
        raise StageError("zoo viz wrote no PNG")
    steady = [r["img_per_s"] for r in rows[1:]] or [rows[0]["img_per_s"]]
    return {
        "train_images": n_train, "test_images": n_test, "epochs": epochs,
        "first_epoch_wall_s": first_epoch_s, "epochs_at_kill": epochs_at_kill,
        "resume_wall_s": resume_s,
        "epoch_img_per_s": [r["img_per_s"] for r in rows],
        "steady_img_per_s": statistics.median(steady),
        "test_acc": [r["test_acc"] for r in rows],
        "recipe_samples": full_schedule_samples(n_train),
        "summary": summary,
        "eval": acc_line.strip(),
        "viz_pngs": pngs,
    }


def stage_fp16_profile(c: Check) -> dict:
    out = c.work / "fp16"
    size = (["--batch-sizes", "1,2", "--warmup", "0", "--repeats", "1", "--modes",
             "fp32,amp-bf16"] if c.quick else [])
    c.checked([PY, "tools/fp16_profile.py", "--random-init", "--device", c.device, "--out",
               str(out), "--no-progress", *size], c.timeout(240))
    results = json.loads((out / "results.json").read_text())
    fp32 = {r["batch"]: r for r in results["latency"] if r["mode"] == "fp32" and "median_ms" in r}
    for r in results["latency"]:
        ref = fp32.get(r["batch"])
        if ref and "median_ms" in r:
            r["speedup_vs_fp32"] = ref["median_ms"] / r["median_ms"]
    return {"latency": results["latency"], "prediction_impact": results["prediction_impact"],
            "environment": results["environment"], "config": results["config"]}


STAGE_FNS: dict[str, Callable[[Check], dict]] = {
    "env": stage_env, "cuda_tests": stage_cuda_tests, "bench_models": stage_bench_models,
    "bench_train": stage_bench_train, "zoo_run": stage_zoo_run, "fp16_profile": stage_fp16_profile,
}


# ---------------------------------------------------------------------------------------
# Report


def _f(v: Any, fmt: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown(report: dict) -> str:
    env = report["stages"].get("env", {}).get("result", {})
    card = ", ".join(env.get("gpus") or []) or "no GPU"
    lines = [
        "# gpu_check", "",
        f"Device `{report['device']}`{' (quick)' if report['quick'] else ''}: {card}; "
        f"torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, driver {env.get('driver')}, "
        f"python {env.get('python', '?')}, timm {env.get('timm', '?')}, "
        f"commit {env.get('git_commit')}; {report['started']}.", "",
        "| stage | status | seconds |", "| --- | --- | --- |",
    ]
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['status']}{': ' + s['error'] if s.get('error') else ''} "
                     f"| {s['seconds']:.1f} |")
    sections = {"cuda_tests": _md_tests, "bench_models": _md_models,
                "bench_train": _md_train, "zoo_run": _md_run, "fp16_profile": _md_fp16}
    for name, fn in sections.items():
        result = report["stages"].get(name, {}).get("result")
        if result:
            lines += ["", f"## {name}", "", *fn(result)]
    return "\n".join(lines) + "\n"


def _md_tests(r: dict) -> list[str]:
    return [f"{r['passed']} passed, {r['failures'] + r['errors']} failed, "
            f"{r['skipped']} skipped of {r['tests']} CUDA tests."]


def _md_models(r: dict) -> list[str]:
    m = r["meta"]
    out = [f"{m['device']}, amp {m['amp']}, batch {m['batch']}, {m['repeats']} repeats x "
           f"{m['steps']} steps (median).", "",
           "| model | mode | zoo img/s | timm img/s | zoo/timm (min-max) |", "| --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        out.append(f"| {row['model']} | {row['mode']} | {_f(row['zoo_img_s'])} | "
                   f"{_f(row['timm_img_s'])} | {row['ratio']:.3f} "
                   f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |")
    out.append("")
    for mode, cost in r["diff_cost"].items():
        out.append(f"Diff-ViT time / ViT time ({mode}): zoo {cost['zoo']:.3f}, "
                   f"timm {cost['timm']:.3f}  ")
    return out


def _md_train(r: dict) -> list[str]:
    out = ["| pipeline | img/s | ms/batch |", "| --- | --- | --- |"]
    for p in r["pipeline"]:
        out.append(f"| {' + '.join(p['augment']) or 'loader only'} | {_f(p['images_per_s'])} "
                   f"| {p['ms_per_batch']:.2f} |")
    out += ["", "| recipe | step | batch | step img/s | s per 50k epoch | GFLOP/img | MFU "
            "| ready after s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in r["steps"]:
        mfu = "n/a" if s["mfu"] is None else f"{100 * s['mfu']:.1f}%"
        out.append(f"| {Path(s['recipe']).stem} | {s['step_mode']} | {s['batch_size']} | "
                   f"{_f(s['images_per_s'])} | {s['epoch_s_50k']:.1f} | "
                   f"{s['gflops_per_image_fwd_bwd']:.3f} | {mfu} | {_f(s['setup_s'], '.1f')} |")
    return out


def _md_run(r: dict) -> list[str]:
    s = r["summary"]
    return [
        f"`zoo run recipes/vit_p4.yaml` on {r['train_images']:,} generated CIFAR-10 images "
        f"(the real pickled format), {r['epochs']} epochs: killed (SIGKILL) after "
        f"{r['epochs_at_kill']} logged epoch(s), resumed to the end in {r['resume_wall_s']:.1f} s.",
        f"- first epoch, wall clock from process start (imports, data, compile): "
        f"{r['first_epoch_wall_s']:.1f} s",
        f"- img/s per epoch: {', '.join(_f(v) for v in r['epoch_img_per_s'])} "
        f"(steady {_f(r['steady_img_per_s'])}); at that rate the recipe's "
        f"{r['recipe_samples']:,} training samples take "
        f"{r['recipe_samples'] / r['steady_img_per_s'] / 60:.1f} min of training",
        f"- test acc per epoch: {', '.join(f'{v:.3f}' for v in r['test_acc'])} (learnable "
        "generated classes: chance is 0.1)",
        f"- summary: status {s['status']}, final test acc {s['final_test_acc']:.4f}",
        f"- zoo eval: {r['eval']}",
        f"- zoo viz: {len(r['viz_pngs'])} PNGs ({', '.join(r['viz_pngs'][:4])}, ...)",
    ]


def _md_fp16(r: dict) -> list[str]:
    env = r["environment"]
    out = [f"CLIP {r['config']['clip_model']}, random init, {env.get('gpu', 'n/a')}; "
           f"{r['config']['timing']}, {r['config']['repeats']} timed calls after "
           f"{r['config']['warmup']} warm-up.", "",
           "| mode | batch | median ms | img/s | speedup vs fp32 | peak alloc MiB | status |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["latency"]:
        peak = row.get("peak_allocated_bytes")
        out.append(f"| {row['mode']} | {row['batch']} | {_f(row.get('median_ms'), '.2f')} | "
                   f"{_f(row.get('img_per_s'))} | {_f(row.get('speedup_vs_fp32'), '.2f')} | "
                   f"{_f(peak / 2**20 if peak else None)} | {row['status']} |")
    return out


# ---------------------------------------------------------------------------------------


def run_check(out: Path, device: str, quick: bool, stages: list[str], work: Path,
              compile: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    c = Check(out, work, device, quick, compile, [])
    report: dict[str, Any] = {"device": device, "quick": quick, "started":
                              time.strftime("%Y-%m-%d %H:%M:%S %Z"), "stages": {}}
    for name in stages:
        tic = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        entry: dict[str, Any]
        try:
            entry = {"status": "ok", "result": STAGE_FNS[name](c)}
        except Exception as e:  # keep going: one broken stage must not hide the others
            entry = {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        entry["seconds"] = time.perf_counter() - tic
        report["stages"][name] = entry
        print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']:.1f} s"
              + (f" ({entry['error']})" if "error" in entry else ""), flush=True)
        atomic_write(out / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
        atomic_write(out / "gpu_check.md", markdown(report))
        atomic_write(out / "gpu_check.log", "\n".join(c.log))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json/.md/.log")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="every stage, tiny (for a CPU)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"subset of {','.join(STAGES)}")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the compiled training steps (implied by --quick)")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    compile = not (args.quick or args.no_compile)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        report = run_check(args.out, args.device, args.quick, stages, args.work, compile)
    else:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
            report = run_check(args.out, args.device, args.quick, stages, Path(work), compile)
    failed = [k for k, s in report["stages"].items() if s["status"] != "ok"]
    print(f"[gpu_check] {len(stages) - len(failed)}/{len(stages)} stages ok"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f"; see {args.out / 'gpu_check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
