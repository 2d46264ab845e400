"""CPU tactics beyond the reference ones (the torch reference is the CPU kernel); importing this
package registers them: gemm ("linear_nt", fp16/bf16 products with the weight kept [N, K])."""

from . import gemm  # noqa: F401  (registers on import)
