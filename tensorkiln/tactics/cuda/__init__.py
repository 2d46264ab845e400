"""CUDA tactics beyond the reference ones; importing this package registers them.

conv (cuDNN, NCHW and NHWC), gemm (cuBLAS/cuBLASLt epilogues), cublaslt (cuBLASLt's heuristic's
top algorithms, each a tactic, through a ctypes binding), attention (flash,
memory-efficient, math), normalization (torch's fused LayerNorm/Softmax kernels) and
elementwise (a Triton kernel generated per ElementwiseChain program), gather (embedding lookups in one
Triton kernel), embed_layer_norm (embedding lookups, their sum and the LayerNorm in one Triton kernel), pooling (a Triton
max-pool kernel in either memory format), skip_layer_norm (residual add + LayerNorm in one
Triton kernel), triton_attention (a Triton flash-attention kernel for short sequences) and triton_gemm (a
Triton GEMM with bias, activation and residual fused), projected_attention (a transformer's Q/K/V projection and
its attention in one Gluon kernel on Hopper), int8_gemm (MatMulInteger and QLinearMatMul on the int8
tensor cores). Nothing here imports triton at import time: triton_kernels is loaded by the first Triton launch.
"""

from . import (attention, conv, cublaslt, elementwise, embed_layer_norm, gather, gemm, int8_gemm,  # noqa: F401
               normalization, pooling, projected_attention, skip_layer_norm, triton_attention,
               triton_gemm)  # (register on import)
