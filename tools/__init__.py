"""Studies of pretrained CLIP, run from the repository root.

`python tools/clip_vs_resnet.py ...` and `python -m tools.clip_vs_resnet ...` both work; tests
and other code import them as `from tools import clip_vs_resnet`.
"""
