"""`zoo fp16-profile`: FP32, FP16 and AMP (FP16/BF16 autocast) for CLIP's image encoder:
speed, memory, predictions.

    zoo fp16-profile --out OUT [--clip-model RN50] [--random-init] [--device auto]
        [--batch-sizes 1,8,32,128,256] [--modes fp32,fp16,amp-fp16,amp-bf16] [--images DIR]

Modes: `fp32`; `fp16`, a `.half()` copy of the encoder (weights and activations in FP16);
`amp-fp16` / `amp-bf16`, FP32 weights under `torch.autocast`, which runs matmuls and
convolutions in the low-precision type and keeps precision-sensitive ops in FP32
(Micikevicius et al., "Mixed Precision Training", arXiv:1710.03740; bfloat16: Kalamkar et al.,
"A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322).

Latency is timed with CUDA events after warm-up (wall clock on CPU); memory comes from the CUDA
caching allocator and NVML. How predictions move is measured with CLIP's ImageNet zero-shot head
(shared with `zoo clip-vs-resnet`) against FP32. On a CPU the defaults are CPU-sized (batch
sizes 1,4; 2 warm-up and 5 timed calls). Ctrl-C writes the rows measured so far and exits with
130. See docs/fp16.md for every column.

settings     the modes and the device-sized defaults (no torch: `zoo --help` stays fast)
precision    running the encoder in a mode
measure      latency, throughput and memory per mode and batch size
impact       how a mode's zero-shot predictions differ from FP32's
environment  what speed depends on: GPU, driver, cuDNN, TF32, CPU, threads
report       results.md, latency.png and (on CUDA) memory.png
run          the whole profile; cli: the click command
"""

RANDOM_BANNER = ("RANDOM WEIGHTS (--random-init): timings and memory are real, "
                 "but the prediction-impact numbers are not meaningful")
