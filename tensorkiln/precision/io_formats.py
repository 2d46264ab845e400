"""I/O formats: the dtype an engine takes an input in or gives an output in.

TensorRT's trtexec sets them with --inputIOFormats and --outputIOFormats (e.g. `fp16:chw`); a
network declared in float32 then has fp16 bindings, and an fp16 engine converts nothing at its
boundary. A serving stack that already holds fp16 tensors (a PyTorch model run in half) feeds
and reads such an engine without a conversion pass over the data in each direction.

Rules:
- A float32 network tensor may cross the boundary as fp16 or bf16. Any tensor may name its
  own dtype (no change). Other changes are refused: a narrower integer would silently wrap, and
  int8/fp8 bindings need quantization scales, which an I/O format does not carry.
- Tensors are linear (TensorRT's `chw` for any rank); vectorized layouts are refused.
- The conversion happens inside the engine: `assign_precisions` treats an fp16 input as the fp16
  version of its float32 tensor (an fp32 layer reading it gets an exact widening Cast) and lets
  an fp16 layer write an fp16 output under its own name (else a Cast at the end converts it).
- A name that is both an input and an output must have one format; a tensor read inside a
  control-flow body keeps its declared dtype (the body was typed with it).
"""

from __future__ import annotations

from typing import Mapping, Optional

from ..errors import ConfigError
from ..ir import HALF_FLOATS, DType, Graph, TensorType, free_names_of_subgraphs

def io_format_dtype(text: str, what: str) -> DType:
    """The dtype an I/O format names ('fp16', 'float16', 'int64', ...); ConfigError otherwise."""
    try:
        return DType.parse(text)
    except ValueError:
        raise ConfigError(f"{what}: unknown type '{text}' (use fp32, fp16, bf16, or an integer/bool type "
                          f"such as int32, int64, bool)") from None


def boundary_dtypes(graph: Graph, input_formats: Mapping[str, str], output_formats: Mapping[str, str]
                    ) -> tuple[dict[str, DType], dict[str, DType]]:
    """The input and output tensors whose dtype the formats change, each with its new dtype.
    Checked against the network as declared: unknown names, impossible changes and tensors a
    control-flow body reads are ConfigErrors that name the tensor."""
    captured: set[str] = set()
    for node in graph.nodes:
        captured |= free_names_of_subgraphs(node)
    changed: list[dict[str, DType]] = []
    for side, formats, values in (("input", input_formats, graph.inputs), ("output", output_formats, graph.outputs)):
        by_name = {v.name: v for v in values}
        result: dict[str, DType] = {}
        for name, text in formats.items():
            value = by_name.get(name)
            if value is None:
                raise ConfigError(f"an {side} format names '{name}', which is not an {side} of the network; "
                                  f"its {side}s are {list(by_name)}")
            want = io_format_dtype(text, f"the format of {side} '{name}'")
            reason = _refusal(value.type, want)
            if reason:
                raise ConfigError(f"{side} '{name}' cannot take the format {want.short}: {reason}")
            if want == value.type.dtype:
                continue
            if name in captured:
                raise ConfigError(f"{side} '{name}' is read inside a control-flow body, which was typed with its "
                                  f"declared {value.type.dtype.short}: its format must stay {value.type.dtype.short}")
            result[name] = want
        changed.append(result)
    inputs, outputs = changed
    for name in {v.name for v in graph.inputs} & {v.name for v in graph.outputs}:
        if inputs.get(name) != outputs.get(name):
            raise ConfigError(f"'{name}' is both an input and an output of the network: give it the same format "
                              f"on both sides")
    return inputs, outputs


def _refusal(declared: object, want: DType) -> Optional[str]:
    if not isinstance(declared, TensorType) or declared.dtype is None:
        return "it is not a tensor of known dtype (a sequence or optional keeps its type)"
    if want == declared.dtype:
        return None
    if want in (DType.INT8, DType.FLOAT8E4M3FN, DType.FLOAT8E5M2):
        return f"{want.short} bindings need a quantization scale, which an I/O format does not give"
    if declared.dtype != DType.FLOAT32 or want not in HALF_FLOATS:
        return (f"it is declared {declared.dtype.short}; a format may name that dtype, or narrow a float32 tensor "
                f"to float16 or bfloat16")
    return None


__all__ = ["boundary_dtypes", "io_format_dtype"]
