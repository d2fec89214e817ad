"""`zoo clip-vs-resnet`: CLIP zero-shot against an ImageNet-trained ResNet-50, on your own
folder of images.

    zoo clip-vs-resnet IMAGES --out OUT [--labels labels.csv] [--clip-model RN50]
        [--resnet resnet50.a1_in1k] [--prompts auto|ensemble|single|name] [--random-init]

CLIP (Radford et al. 2021, arXiv:2103.00020) classifies by comparing an image embedding with
text embeddings of the 1000 ImageNet class names (zero-shot, no ImageNet training labels);
the ResNet-50 (He et al. 2016, arXiv:1512.03385) is a timm classifier trained on ImageNet-1k
(`resnet50.a1_in1k`: Wightman et al., "ResNet strikes back", arXiv:2110.00476;
`resnet50.tv_in1k`: the original torchvision weights). Each model gets its own eval transform.

IMAGES is a folder: flat (no labels), or ImageFolder-style with one subfolder per class named
by WordNet id (n01440764) or class name (tench, golden_retriever), or any folder plus
`--labels` CSV rows `path,label` (paths relative to IMAGES). OUT gets predictions.csv,
summary.json, the galleries clip_better/ and resnet_better/, and report.md.

labels        what users write as labels, and the images to classify
resnet        the timm classifier and its eval transform
predict       both models' top-5 per image
evaluation    accuracy, the agreement matrix, per-class rates
galleries     where each model wins, drawn as PNGs
architecture  parameters, FLOPs and design facts read from the module trees
report        predictions.csv and report.md
run           the whole comparison; cli: the click command
"""

TOPK = 5
RANDOM_BANNER = "RANDOM WEIGHTS: a smoke test of the pipeline, not a result"
