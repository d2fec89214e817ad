"""`zoo export`: a trained model as TorchScript or ONNX, with its preprocessing stated.

The exported graph takes normalised images. A JSON file next to it (`<file>.json`) says
what that means (size, mean, std, layout) and names the classes, so the file runs without
zoo. Each export is run against the PyTorch model on a random batch before it is written:
a file that gives other logits never lands.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.errors import ZooError, first_line
from zoo.io import atomic_write, write_json
from zoo.model import ViT
from zoo.registry import spec_name
from zoo.runs import RunRef, load_checkpoint, trained_on

SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
LAYOUT = "[B, C, H, W] float RGB in [0,1], then (x - mean) / std"
TOLERANCE = 1e-4  # largest |logit difference| from PyTorch an export may show
ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx.export (dynamo, the default) needs both


def sidecar(path: Path) -> Path:
    """`model.pt` -> `model.pt.json`: a .pt and a .onnx in one folder keep one JSON each."""
    return path.with_name(path.name + ".json")


def untraceable(model: ViT, fmt: str, error: Exception) -> ZooError:
    """Tracing fails in a plugin's Python; name the plugins, which are what the user chose."""
    cfg = model.cfg
    return ZooError(f"attention '{spec_name(cfg.attention)}' (posemb '{spec_name(cfg.posemb)}') "
                    f"cannot be exported to {fmt} ({first_line(error)})")


def to_torchscript(model: ViT, example: Tensor, check: Tensor) -> tuple[bytes, float]:
    """The traced model's bytes and its largest logit difference from `model` on `check`,
    read back from those bytes as a user would load them."""
    with warnings.catch_warnings():
        # torch.jit's deprecation notice, and TracerWarnings on the shape checks in the
        # forward: the trace keeps img_size, which the JSON states
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as e:  # any op a plugin uses may be untraceable
            raise untraceable(model, "TorchScript", e) from e
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")
    return buffer.getvalue(), float((loaded(check) - model(check)).abs().max())


def to_onnx(model: ViT, example: Tensor, check: Tensor) -> tuple[bytes, float | None]:
    """The ONNX model's bytes (batch size left free) and, where onnxruntime is installed,
    its largest logit difference from `model` on `check` (None: not checked)."""
    try:
        program = torch.onnx.export(model, (example,), dynamo=True, external_data=False,
                                    verbose=False, input_names=["image"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:  # torch.export reports a plugin's Python in many error types
        raise untraceable(model, "ONNX", e) from e
    blob = program.model_proto.SerializeToString()
    if importlib.util.find_spec("onnxruntime") is None:
        return blob, None
    import onnxruntime

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: check.numpy()})[0]
    return blob, float((torch.from_numpy(got) - model(check)).abs().max())


@torch.no_grad()
def export(ref: RunRef, fmt: str, out: str | Path | None = None) -> dict[str, Any]:
    """Export a run's (or checkpoint's) model in eval mode to `out` (default
    `<run>/export/model.pt|.onnx`), with `<out>.json`; returns what the JSON holds plus the
    file and its check."""
    if fmt not in SUFFIX:
        raise ZooError(f"--format {fmt}: unknown; use {' or '.join(SUFFIX)}")
    missing = [p for p in ONNX_PACKAGES if fmt == "onnx" and importlib.util.find_spec(p) is None]
    if missing:
        raise ZooError(f"--format onnx needs {' and '.join(missing)}: pip install "
                       "'vit-zoo[onnx]' (in a checkout: pip install -e '.[onnx]')")
    model, recipe, run, ckpt = load_checkpoint(ref)
    stats, cfg = trained_on(run, recipe), recipe.model
    path = Path(out) if out is not None else run / "export" / f"model{SUFFIX[fmt]}"
    g = torch.Generator().manual_seed(0)
    example, check = (torch.randn(n, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)
                      for n in (2, 3))  # two batch sizes: the batch dimension must stay free
    blob, diff = (to_torchscript if fmt == "torchscript" else to_onnx)(model, example, check)
    if diff is not None and not diff <= TOLERANCE:  # NaN fails too
        raise ZooError(f"the {fmt} export gives logits {diff:.3g} away from PyTorch's (over "
                       f"{TOLERANCE}); attention '{spec_name(cfg.attention)}' does not trace "
                       "faithfully")
    info = {"format": fmt, "img_size": cfg.img_size, "in_chans": cfg.in_chans,
            "mean": list(stats["mean"]), "std": list(stats["std"]),
            "classes": list(stats["classes"]),
            "input": f"{LAYOUT}; H = W = {cfg.img_size}, any batch size",
            "output": f"logits [B, {cfg.num_classes}], in the order of classes",
            "source_checkpoint": str(ckpt)}
    try:
        atomic_write(path, blob)
        write_json(sidecar(path), info)
    except OSError as e:
        raise ZooError(f"{path}: cannot write the export ({first_line(e)}); "
                       "choose another --out FILE") from e
    return {**info, "file": str(path), "json": str(sidecar(path)), "max_diff": diff}
