"""Library and engine-file format versions (one place, read by the engine writer and the runtime)."""

__version__ = "0.1.0"

# Bump when the engine file layout or manifest schema changes incompatibly.
ENGINE_FORMAT_VERSION = 1
