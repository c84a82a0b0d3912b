"""Read MeTRAbs' metadata ``.pkl`` safely and turn it into JSON.

The origin loaded its pickle blindly; a pickle can run any code while loading. :class:`RestrictedUnpickler` lets
through only what plain data needs: the pickle opcodes for dict/list/tuple/str/bytes/int/float/bool/None, a few
builtin containers (set, frozenset, bytearray, complex, OrderedDict) and numpy array/scalar reconstruction
(``ndarray``, ``dtype``, ``_reconstruct``, ``scalar``, ``_frombuffer``, for numpy 1 and 2 module paths). Any other
global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.26
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

MAX_PKL_BYTES = 64 << 20

_NUMPY: dict[str, Any] = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "_frombuffer": _numeric._frombuffer,
}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,  # protocol 2 writes bytes as _codecs.encode(str, "latin1")
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _NUMPY["_reconstruct"]
    _ALLOWED[(_mod, "scalar")] = _NUMPY["scalar"]
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _NUMPY["_frombuffer"]


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol 0-2 pickles written by Python 3 use Python 2 names (``__builtin__``, ``commands``); map them back."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references code that plain metadata does not need; it was not loaded."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in an explicit allow-list (never imports anything)."""

    def __init__(self, file: io.BufferedIOBase, source: str = "<bytes>") -> None:
        super().__init__(file, fix_imports=False)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = _py3_name(module, name)
        try:
            return _ALLOWED[key]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{key[0]}.{name}': metadata pickles may hold only plain "
                "data (dict, list, str, numbers, numpy arrays). If the file is trusted, convert it to JSON where it "
                "was made; otherwise discard it."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in metadata pickles")


def load_pickle(path: Path) -> Any:
    """Load ``path`` with :class:`RestrictedUnpickler`."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_PKL_BYTES:
        raise UnsafePickleError(
            f"{path}: {size} bytes is too large for a metadata pickle (limit {MAX_PKL_BYTES})"
        )
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


def to_jsonable(obj: Any, where: str = "metadata") -> Any:
    """Plain JSON values from unpickled data: arrays -> lists, tuples/sets -> lists, bytes -> str, numpy scalars."""
    if isinstance(obj, dict):
        return {str(_key(k)): to_jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), where)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v, where) for v in obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8")
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), where)
    if isinstance(obj, float):
        if not np.isfinite(obj):
            raise ValueError(f"{where}: {obj} has no JSON form")
        return obj
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise ValueError(f"{where}: {type(obj).__name__} values cannot be stored as JSON metadata")


def _key(k: Any) -> Any:
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).decode("utf-8")
    if isinstance(k, np.generic):
        return k.item()
    return k


def pickle_to_json(path: Path) -> dict[str, Any]:
    """Load a metadata pickle safely and return it as a JSON-ready dict (checked: it must be a dict)."""
    data = to_jsonable(load_pickle(path), where=str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: metadata must be a dict, got {type(data).__name__}")
    json.dumps(data, allow_nan=False)  # proves it serialises
    return data
