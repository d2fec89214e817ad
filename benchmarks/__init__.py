"""Speed measurements and the GPU acceptance check; see benchmarks/README.md."""
