"""The timing cache: what the auto-tuner measured, kept so a rebuild need not measure again.

One entry per layer signature: the op (type and domain), a digest of its attributes, each
input's dtype, shape and memory format, the candidate tactics, and the environment the
times hold for (device name and compute capability, tensorkiln and torch versions, math
settings such as TF32). The entry holds the winning tactic and every candidate's time.

The file is JSON:

    {"format": "tensorkiln-timing-cache", "version": 1,
     "entries": {"<sha256 of the key>": {"key": {...}, "tactic": "...",
                                         "times_ms": {"reference": 0.41, ...},
                                         "rejected": {"name": "why it could not run"}}}}

Entries of other devices and versions stay in the file (their keys never match here), so
one file can serve several machines. A file that is not a timing cache (not JSON, another
format, a broken entry) is refused with a ConfigError naming it, rather than ignored and
overwritten as TensorRT does: the user named that file, and silently replacing it could
destroy something else. Writes are atomic (a temporary file beside it, then a rename) and
merge with what another build wrote in the meantime.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..ir import DType, Graph, Node, TensorType

CACHE_FORMAT = "tensorkiln-timing-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CacheEntry:
    tactic: str
    # Candidate name -> measured time in milliseconds (the median of the measurements).
    times_ms: Mapping[str, float]
    # Candidates that could not run on these inputs, with the reason.
    rejected: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"tactic": self.tactic, "times_ms": dict(self.times_ms), "rejected": dict(self.rejected)}


class TimingCache:
    """Entries by key digest; `path` None keeps the cache in memory (for one build)."""

    def __init__(self, path: Optional[Path] = None, entries: Optional[dict[str, dict[str, Any]]] = None):
        self.path = path
        self._entries: dict[str, dict[str, Any]] = dict(entries or {})
        self._added: set[str] = set()
        self.hits = 0
        self.misses = 0

    @classmethod
    def load(cls, path: os.PathLike | str) -> "TimingCache":
        """The cache in `path`; a file that does not exist yet gives an empty cache that will be written there."""
        path = Path(path)
        return cls(path, _read_entries(path) if path.exists() else {})

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def added(self) -> int:
        """Entries measured by this process, not yet known to the file."""
        return len(self._added)

    def lookup(self, key: Mapping[str, Any], retry: bool = False) -> Optional[CacheEntry]:
        """The entry of `key`, or None. `retry`: another key tried for the same layer after a
        miss; a hit then takes that miss's place in the counts."""
        record = self._entries.get(key_digest(key))
        if record is None:
            self.misses += not retry
            return None
        self.misses -= retry
        self.hits += 1
        return CacheEntry(record["tactic"], dict(record["times_ms"]), dict(record.get("rejected", {})))

    def store(self, key: Mapping[str, Any], entry: CacheEntry) -> None:
        digest = key_digest(key)
        self._entries[digest] = {"key": _plain(key), **entry.to_json()}
        self._added.add(digest)

    def save(self) -> None:
        """Write the cache to its file (atomically), merged with entries another build wrote meanwhile."""
        if self.path is None or (not self._added and self.path.exists()):
            return
        merged = _read_entries(self.path) if self.path.exists() else {}
        merged.update(self._entries)
        document = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": merged}
        _write_text_atomic(self.path, json.dumps(document, indent=1, sort_keys=True) + "\n")
        self._entries = merged
        self._added.clear()


def _read_entries(path: Path) -> dict[str, dict[str, Any]]:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"timing cache file '{path}' {why}: delete it (a new one is written on the next build) "
                           f"or build without it (--noBuilderCache)")

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot be read ({exc})") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"is not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
        raise bad("is not a tensorkiln timing cache")
    if document.get("version") != CACHE_VERSION:
        raise bad(f"has timing cache version {document.get('version')!r}; this tensorkiln reads version "
                  f"{CACHE_VERSION}")
    entries = document.get("entries")
    if not isinstance(entries, dict):
        raise bad("has no 'entries' table")
    for digest, record in entries.items():
        ok = (isinstance(record, dict) and isinstance(record.get("tactic"), str)
              and isinstance(record.get("times_ms"), dict)
              and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in record["times_ms"].items())
              and isinstance(record.get("rejected", {}), dict))
        if not ok:
            raise bad(f"has a malformed entry '{digest}'")
    return entries


def _write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over `path`: readers see the old or new file."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigError(f"cannot write timing cache file '{path}': {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"cannot write timing cache file '{path}': {exc}") from exc


# ---- keys ------------------------------------------------------------------------------------------

def memory_format(tensor: torch.Tensor) -> str:
    """'contiguous', 'channels_last', 'channels_last_3d', or the strides of any other layout."""
    if tensor.is_contiguous():
        return "contiguous"
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    if tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    return "strides" + "x".join(str(s) for s in tensor.stride())


def describe_value(value: Any) -> Any:
    """An input's dtype, shape and memory format as JSON data (None for an absent optional input)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return [DType.from_torch(value.dtype).short, list(value.shape), memory_format(value)]
    if isinstance(value, np.ndarray):
        kind = DType.from_numpy(value.dtype).short if value.dtype != object else "object"
        return [kind, list(value.shape), "numpy"]
    if isinstance(value, (list, tuple)):
        return ["sequence", [describe_value(v) for v in value]]
    return [type(value).__name__]


def layer_key(node: Node, inputs: Sequence[Any], candidates: Sequence[str],
              environment: Mapping[str, Any]) -> dict[str, Any]:
    """The timing cache key of a layer run on these inputs with these candidate tactics."""
    return {
        "op": f"{node.domain}::{node.op_type}" if node.domain else node.op_type,
        "attrs": attrs_digest(node.attrs),
        "inputs": [describe_value(x) for x in inputs],
        "candidates": sorted(candidates),
        "environment": dict(sorted(environment.items())),
    }


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_plain(key), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def attrs_digest(attrs: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    _hash_into(h, dict(attrs))
    return h.hexdigest()[:32]


def _hash_into(h: Any, value: Any) -> None:
    # Type tags keep e.g. the int 1, the float 1.0 and the string "1" apart.
    if isinstance(value, np.ndarray):
        h.update(f"array:{value.dtype}:{value.shape}:".encode())
        h.update(repr(value.tolist()).encode() if value.dtype == object else np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Graph):
        h.update(f"graph:{len(value.inputs)}:{len(value.outputs)}:".encode())
        for v in value.initializers:
            _hash_into(h, v.const)
        for n in value.nodes:
            h.update(f"node:{n.domain}:{n.op_type}:{len(n.inputs)}:{len(n.outputs)}:".encode())
            _hash_into(h, n.attrs)
    elif isinstance(value, dict):
        h.update(f"dict:{len(value)}:".encode())
        for k in sorted(value, key=str):
            h.update(f"{k}=".encode())
            _hash_into(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"list:{len(value)}:".encode())
        for v in value:
            _hash_into(h, v)
    elif isinstance(value, TensorType):
        h.update(f"type:{value}".encode())
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def _plain(value: Any) -> Any:
    """JSON-ready copy (tuples to lists), so a key reads back equal to what was stored."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
