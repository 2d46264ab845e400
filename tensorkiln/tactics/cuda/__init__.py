"""CUDA tactics beyond the reference ones; importing this package registers them.

conv (cuDNN, NCHW and NHWC), gemm (cuBLAS/cuBLASLt epilogues), attention (flash,
memory-efficient, math), normalization (torch's fused LayerNorm/Softmax kernels) and
elementwise (a Triton kernel generated per ElementwiseChain program). Nothing here imports
triton at import time: triton_kernels is loaded by the first Triton launch.
"""

from . import attention, conv, elementwise, gemm, normalization  # noqa: F401  (register on import)
