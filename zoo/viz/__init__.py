"""Attention visualization, in four layers; import from the module that holds a name.

maps      the numerics: [CLS] maps, rollout, mass masks, a model's maps (no matplotlib)
figures   matplotlib drawing, running visualizers, the TensorBoard images of a run
subjects  what `zoo viz` looks at: a run, a checkpoint, a timm model, image files
render    what `zoo viz` does: the figures of one subject or two side by side, as PNGs
"""
