"""Training a recipe: `trainer` (the loop and its state), `step` (eager, compiled or one
CUDA graph), `optim`, `epoch` (statistics), `build` (data), `callbacks` (what is recorded)
and `launch` (the `zoo run` entry point: DDP, lock, resume, exit codes)."""
