# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""RefCOCO / RefCOCO+ / RefCOCOg's refs pickles, read with an unpickler that builds builtin containers and scalars
only."""

import io
import pickle
from pathlib import Path

from .common import require_path

# ---------------------------------------------------------------------------------------------- referring refs
# What a refs pickle may build: builtin containers and scalars. Lists, dicts, tuples, strings, bytes, numbers, bools
# and None are pickle opcodes and need no global at all; sets and a few constructors are looked up as globals
# (`__builtin__` in Python 2 pickles, which RefCOCO's are). Everything else, `posix.system` or
# `copy_reg._reconstructor` (arbitrary objects) included, is refused before it is called.
_SAFE_BUILTINS = frozenset({"set", "frozenset", "list", "dict", "tuple", "str", "bytes", "bytearray", "int", "float",
                            "complex", "bool"})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed builtins; nothing it named was called."""


class _BuiltinsUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class("builtins", name)
        raise UnsafePickleError(
            f"{self.source}: refused the global {module}.{name}; a refs file holds only builtin containers and "
            f"scalars ({', '.join(sorted(_SAFE_BUILTINS))}), so this file is not a RefCOCO refs file or was tampered "
            "with. Nothing it names was run."
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent id {pid!r}; a refs file holds none.")


def load_builtin_pickle(path) -> object:
    """The object in the pickle file `path`, built from builtin containers and scalars only (`UnsafePickleError`,
    naming the file and the global, for anything else; nothing it names is called)."""
    path = Path(path)
    data = require_path(path, "pickle file").read_bytes()
    try:
        return _BuiltinsUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # truncated or not a pickle at all: EOFError, UnpicklingError, ValueError, ...
        raise ValueError(f"{path}: not a readable pickle ({type(err).__name__}: {err}).") from None


REF_KEYS = ("image_id", "ann_id", "split", "sentences")


def refcoco_refs(path) -> list[dict]:
    """The refs of RefCOCO / RefCOCO+ / RefCOCOg's `refs(unc).p` / `refs(umd).p`: a list of dicts with at least
    `REF_KEYS`, read by `load_builtin_pickle` (a file that asks for code to run is refused, naming the global)."""
    refs = load_builtin_pickle(path)
    if not isinstance(refs, list):
        raise ValueError(f"refs: {path} holds a {type(refs).__name__}, expected the list of refs of refs(unc).p.")
    for position, ref in enumerate(refs):
        missing = [key for key in REF_KEYS if not isinstance(ref, dict) or key not in ref]
        if missing:
            raise ValueError(f"refs: entry {position} of {path} lacks {missing} (a ref has {list(REF_KEYS)}).")
    return refs


__all__ = ["REF_KEYS", "UnsafePickleError", "load_builtin_pickle", "refcoco_refs"]
