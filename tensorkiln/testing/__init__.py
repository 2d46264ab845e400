"""Test support shared by the test suite, `kiln` checks and benchmarks: the tolerance
table, oracles (ONNX reference evaluator, onnxruntime) and model generators."""
