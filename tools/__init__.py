"""Studies of pretrained CLIP on top of zoo: `zoo clip-vs-resnet` (compare/) and
`zoo fp16-profile` (fp16/), with the CLIP code both share (clip_common/).

Installed as the package `zoo_tools` (this folder keeps its name in a checkout); zoo never
imports it: the commands reach `zoo` through the `zoo.commands` entry-point group. From a
checkout, `python tools/clip_vs_resnet.py` and `python tools/fp16_profile.py` run the same
commands without installing.
"""
