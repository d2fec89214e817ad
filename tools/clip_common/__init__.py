"""CLIP code both tools share, so that a CLIP model is loaded, its zero-shot classifier is
built and their shared flags are read in exactly one way. Devices, files, images and the
error exit are zoo's.

settings  the flags' defaults and choices (no torch: `zoo --help` stays fast)
cli       the shared click options, and the command class that records its command line
models    CLIP architectures and loading (pretrained, a local file, or random weights)
zeroshot  the ImageNet zero-shot head: class names, prompt templates, text embeddings
images    image files in a folder, and scikit-image's sample photos

- CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021 (arXiv:2103.00020), through the `openai-clip` package.
- Zero-shot head: the 1000 ImageNet classes with CLIP's curated class names and its 80
  prompt templates, taken from `open_clip.zero_shot_metadata` (a copy of OpenAI's
  "Prompt_Engineering_for_ImageNet.ipynb"), combined by prompt ensembling (paper, Sec. 3.1.4).
- ImageNet-1k WordNet ids in class-index order: `timm.data.ImageNetInfo` (timm's
  `imagenet_synsets.txt`, the sorted ILSVRC-2012 synsets that torchvision/timm indices use).
"""
