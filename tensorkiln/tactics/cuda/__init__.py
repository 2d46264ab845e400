"""CUDA tactics beyond the reference ones: see the CUDA backend issue."""
