"""The training step, run eagerly or replayed as one CUDA graph.

A step is two functions: `prepare(images, labels) -> (x, y)` (uint8 to float, augmentations,
normalisation) and `update(x, y) -> outputs` (forward, loss, backward, clipping, optimizer,
EMA). Eagerly, PyTorch launches each of their ~1,000 kernels from Python, which on a GPU
takes longer than running them for a CIFAR-sized ViT (measured on an H200: 21.7 ms per
eager vit_p4 step at batch 128, 5.3 ms replayed as one graph). `GraphStep` runs the first
`warmup` steps eagerly on a side stream (compiling, allocating optimizer state), captures
the next one as a CUDA graph and replays it for every later step, copying each batch into
the graph's static inputs: "whole-network capture" in PyTorch's CUDA Graphs notes
(https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs).

What a graph needs from the code it captures: no host synchronisation, tensors that stay
where they are (the optimizer `capturable`, its learning rate a device tensor updated in
place), and randomness drawn from torch's CUDA generator (each replay then draws anew).
Augment ops declare the last with `capturable = True`; a step whose ops do not all declare
it keeps `prepare` out of the graph. A capture that fails prints one line and the step
falls back (prepare outside the graph, then no graph), so a run never dies of it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from zoo.device import sync
from zoo.errors import first_line
from zoo.schema import Recipe

Prepare = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Update = Callable[[Tensor, Tensor], tuple[Tensor, ...]]


class GraphStep:
    """`step(images, labels)` as a CUDA graph after `warmup` eager steps; see the module doc.

    `capture_prepare` puts the augmentations into the graph too (only for ops declared
    capturable). `note` receives one line when a capture fails and the step falls back.
    """

    def __init__(self, prepare: Prepare, update: Update, *, capture_prepare: bool,
                 note: Callable[[str], None], warmup: int = 3):
        self.prepare, self.update, self.note, self.warmup = prepare, update, note, warmup
        self.levels = [True, False] if capture_prepare else [False]  # what to try, in order
        self.calls = 0
        self.side_stream = torch.cuda.Stream()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: Sequence[Tensor] = ()
        self.static_out: Sequence[Tensor] = ()
        self.with_prepare = False

    @property
    def captured(self) -> str:
        """What the graph holds: 'prepare + update', 'update', or '' (no graph)."""
        if self.graph is None:
            return ""
        return "prepare + update" if self.with_prepare else "update"

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        if self.graph is not None:
            return self._replay(self._inputs(images, labels))
        if self.calls < self.warmup:
            self.calls += 1
            return self._on_side_stream(images, labels)
        while self.levels:
            self.with_prepare = self.levels.pop(0)
            inputs = self._inputs(images, labels)
            if self._capture(inputs):
                return self._replay(inputs)
            if not self.with_prepare:  # prepare already ran for this batch: finish it eagerly
                with uncaptured():
                    return self.update(*inputs)
        return self._eager(images, labels)  # no graph could be captured

    def _inputs(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """What the graph reads: the batch itself, or the batch after an eager prepare."""
        return (images, labels) if self.with_prepare else self.prepare(images, labels)

    def _replay(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        for static, new in zip(self.static_in, inputs, strict=True):
            static.copy_(new)
        self.graph.replay()
        # the graph's outputs are overwritten by the next replay: hand out copies
        return tuple(t.clone() for t in self.static_out)

    def _on_side_stream(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        """An eager step; before a capture, lazy state (cuBLAS handles, optimizer state,
        compiled kernels) must come to exist on a stream other than the one captured."""
        side, main = self.side_stream, torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = self._eager(images, labels)
        main.wait_stream(side)
        return out

    def _eager(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        with uncaptured():
            return self.update(*self.prepare(images, labels))

    def _capture(self, inputs: Sequence[Tensor]) -> bool:
        static_in = tuple(t.clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                x, y = self.prepare(*static_in) if self.with_prepare else static_in
                static_out = self.update(x, y)
            torch.cuda.synchronize()
        except Exception as e:  # whatever broke the capture, training goes on without it
            what = "the step with its augmentations" if self.with_prepare else "the step"
            self.note(f"could not capture {what} as a CUDA graph ({first_line(e)}); "
                      + ("keeping the augmentations out of it" if self.levels
                         else "training without a graph"))
            torch.cuda.synchronize()
            return False
        self.graph, self.static_in, self.static_out = graph, static_in, static_out
        return True


@contextlib.contextmanager
def uncaptured() -> Iterator[None]:
    """A step outside any graph. A capturable optimizer warns on such a step that it may be
    slower than it needs to be; before a capture, or instead of a failed one, that is
    expected, so the warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*capturable=True.*")
        yield


def why_no_graph(recipe: Recipe, device: torch.device, world: int) -> str:
    """Why a CUDA graph of the step cannot be used here ('' when it can)."""
    if device.type != "cuda":
        return "not on CUDA"
    if world > 1:
        return "DistributedDataParallel"
    if recipe.train.amp == "fp16":
        return "fp16 loss scaling checks for overflow on the host; use amp bf16"
    if recipe.train.optimizer != "adamw":
        return "only AdamW takes its learning rate as a device tensor"
    return ""


class StepRunner:
    """How each training step runs: eagerly, through torch.compile, or replayed as one CUDA
    graph, as the recipe asks and the device allows.

    The first steps (compile, warm-up, capture) are timed as `setup_s`; a compile that fails
    prints one line and the run goes on eagerly. `net` is the module `update` calls: the
    (DDP-wrapped) model, compiled or not.
    """

    def __init__(self, prepare: Prepare, update: Update, ddp: nn.Module, recipe: Recipe,
                 device: torch.device, *, graph_off: str, capture_prepare: bool,
                 say: Callable[[str], None]):
        t = recipe.train
        self.ddp, self.device, self.say, self.graph_off = ddp, device, say, graph_off
        self.want_graph = t.cuda_graph
        compile_here = t.compile is True or (t.compile == "cuda" and device.type == "cuda")
        self.net = torch.compile(ddp) if compile_here else ddp
        self.prepare, self.update = prepare, update
        self.run: Update = self._eager
        if t.cuda_graph and not graph_off:
            self.run = GraphStep(prepare, update, capture_prepare=capture_prepare,
                                 note=lambda m: say(f"warning: {m}"))
        self.setup_s: float | None = None  # compile, warm-up and capture: the first steps
        self._tic: float | None = None

    def _eager(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        return self.update(*self.prepare(images, labels))

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        if self.setup_s is not None:
            return self.run(images, labels)
        self._tic = self._tic or time.perf_counter()
        out = self._first_steps(images, labels)
        if self._setup_done():
            sync(self.device)
            self.setup_s = time.perf_counter() - self._tic
            if self.net is not self.ddp or isinstance(self.run, GraphStep):
                self.say(f"training step ready in {self.setup_s:.1f} s ({self.mode()})")
        return out

    def _first_steps(self, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        if self.net is self.ddp:
            return self.run(images, labels)
        try:
            return self.run(images, labels)
        except Exception as e:  # the compiler's failure, or the step's own error
            self.net = self.ddp
            out = self.run(images, labels)  # an error of the step itself raises here
            self.say(f"warning: torch.compile failed ({first_line(e)}); training without it")
            return out

    def _setup_done(self) -> bool:
        step = self.run
        return not isinstance(step, GraphStep) or step.graph is not None or not step.levels

    def mode(self) -> str:
        """How the step runs, in words: compiled or eager, and what a CUDA graph holds."""
        mode = "compiled" if self.net is not self.ddp else "eager"
        step = self.run
        if isinstance(step, GraphStep):
            if step.captured:
                return f"{mode}, {step.captured} in one CUDA graph"
            if step.levels:
                return f"{mode}, one CUDA graph after {step.warmup} warm-up steps"
            return f"{mode}, no CUDA graph: its capture failed"
        return mode + (f", no CUDA graph: {self.graph_off}" if self.want_graph and self.graph_off else "")
