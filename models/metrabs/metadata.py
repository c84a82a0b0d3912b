"""Read MeTRAbs' metadata ``.pkl`` safely and turn it into JSON.

The origin loaded its pickle blindly; a pickle can run any code while loading, and even "plain data" constructors can
be made to allocate without bound (``bytearray(10**8)`` is a 30-byte pickle; so is a numpy array state claiming
10**8 object items). :class:`RestrictedUnpickler` therefore lets through only:

- the pickle opcodes for dict/list/tuple/str/bytes/bytearray/int/float/bool/None (their sizes are bounded by the
  file's, which is at most :data:`MAX_PKL_BYTES`);
- a tiny allow-list of callables for REDUCE: ``set``, ``frozenset``, ``complex``, ``collections.OrderedDict``,
  ``_codecs.encode`` (only ``(str, "latin1")``, how protocol 2 writes bytes), and checked stand-ins for numpy's
  reconstruction (``dtype`` from a type string, ``_reconstruct`` of a plain ``ndarray``, ``scalar``, ``_frombuffer``;
  numpy 1 and 2 module paths). Every array or scalar built is checked against its state (the item count and data
  length must match the shape) and counted against :data:`MAX_ARRAY_BYTES` for the whole file before anything is
  allocated; ``numpy.ndarray`` itself may not be called.

Anything else (``builtins.bytearray``, ``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
:class:`UnsafePickleError`, a one-line message naming the file. :func:`to_jsonable` also bounds how many values it
expands (shared references count every time they are reached), so a small pickle of nested shared lists cannot
become a huge JSON document.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextvars
import io
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.26
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

MAX_PKL_BYTES = 16 << 20  # a metadata pickle (joint names, edges, skeleton tables) is kilobytes
MAX_ARRAY_BYTES = 64 << 20  # all numpy arrays and scalars built while loading one pickle, together
MAX_JSON_VALUES = (
    2_000_000  # values in the JSON form of the loaded data (shared references counted each time)
)
MAX_JSON_CHARS = 64 << 20  # characters of strings/bytes in that JSON form


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references code, or would allocate more, than plain metadata needs; it was not loaded."""


class _Load:
    """Per-load state: the file's name (for messages) and the bytes of arrays still allowed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.left = MAX_ARRAY_BYTES

    def refuse(self, why: str) -> UnsafePickleError:
        return UnsafePickleError(
            f"{self.source}: {why}; metadata pickles hold only small plain data, not loaded"
        )

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise self.refuse(
                f"{what} would allocate {nbytes} bytes (limit {MAX_ARRAY_BYTES} bytes of arrays per file)"
            )
        self.left -= nbytes


_CURRENT: contextvars.ContextVar[_Load | None] = contextvars.ContextVar("metrabs_pickle_load", default=None)


def _current() -> _Load:
    load = _CURRENT.get()
    if load is None:
        raise UnsafePickleError("numpy reconstruction outside RestrictedUnpickler.load is not allowed")
    return load


def _n_items(shape: Any, load: _Load) -> int:
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise load.refuse(f"array shape {shape!r:.60} is not a tuple of non-negative ints")
    return math.prod(shape)


def _as_dtype(value: Any, load: _Load) -> np.dtype[Any]:
    if isinstance(value, np.dtype):
        return value
    if isinstance(value, (str, bytes)) and len(value) <= 32:
        try:
            return np.dtype(value)
        except TypeError as e:
            raise load.refuse(f"bad numpy dtype {value!r} ({e})") from None
    raise load.refuse(f"numpy dtype given as {type(value).__name__}, not a type string")


class _CheckedArray(np.ndarray):
    """What ``_reconstruct`` builds: its ``__setstate__`` (pickle BUILD) checks the state before numpy allocates."""

    def __setstate__(self, state: Any) -> None:
        load = _current()
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise load.refuse("numpy array state is not a 4- or 5-tuple")
        shape, dtype, _fortran, raw = state[-4:]
        if not isinstance(dtype, np.dtype):
            raise load.refuse("numpy array state has no dtype")
        n = _n_items(shape, load)
        nbytes = n * dtype.itemsize
        if dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != n:
                got = len(raw) if isinstance(raw, list) else type(raw).__name__
                raise load.refuse(f"object array of shape {shape} has {got} items")
        elif not isinstance(raw, (bytes, bytearray)) or len(raw) != nbytes:
            got = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
            raise load.refuse(f"array of shape {shape} {dtype} needs {nbytes} data bytes, has {got}")
        load.take(nbytes, f"an array of shape {shape} {dtype}")
        super().__setstate__(state)


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` as ``_reconstruct``'s first argument; calling it is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _current().refuse("calling numpy.ndarray directly is not allowed")


_NDARRAY = _NdarrayToken()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    load = _current()
    if subtype is not _NDARRAY:
        raise load.refuse("numpy _reconstruct of anything but a plain ndarray")
    dt = _as_dtype(dtype, load)
    n = _n_items(shape, load)
    load.take(n * dt.itemsize, f"an array of shape {shape} {dt}")
    return _multiarray._reconstruct(_CheckedArray, shape, dt)


def _scalar(dtype: Any, obj: Any = None) -> Any:
    load = _current()
    if not isinstance(dtype, np.dtype):
        raise load.refuse("numpy scalar without a dtype")
    if dtype.hasobject:
        return obj
    if not isinstance(obj, bytes) or len(obj) != dtype.itemsize:
        raise load.refuse(f"numpy scalar of {dtype} needs {dtype.itemsize} data bytes")
    load.take(dtype.itemsize, f"a scalar of {dtype}")
    return _multiarray.scalar(dtype, obj)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    load = _current()
    if not isinstance(buf, (bytes, bytearray)):
        raise load.refuse("numpy _frombuffer of something that is not bytes")
    dt = _as_dtype(dtype, load)
    n = _n_items(shape, load)
    if dt.hasobject or n * dt.itemsize != len(buf) or order not in ("C", "F"):
        raise load.refuse(f"numpy buffer of {len(buf)} bytes does not hold shape {shape} {dt}")
    load.take(len(buf), f"an array of shape {shape} {dt}")
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).view(_CheckedArray)


def _dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype[Any]:
    return _as_dtype(obj, _current())


def _latin1(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _current().refuse(
            f"_codecs.encode is allowed only as (str, 'latin1'), got encoding {encoding!r:.20}"
        )
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1,  # protocol 2 writes bytes as _codecs.encode(str, "latin1")
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _reconstruct
    _ALLOWED[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _frombuffer


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol 0-2 pickles written by Python 3 use Python 2 names (``__builtin__``, ``commands``); map them back."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in an explicit allow-list (never imports anything) and bounds
    what they may allocate (see the module docstring)."""

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

    def load(self) -> Any:
        """The unpickled data, with numpy arrays as plain ``ndarray``."""
        token = _CURRENT.set(_Load(self.source))
        try:
            return _plain(super().load(), {})
        finally:
            _CURRENT.reset(token)


def _plain(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace the loader's checked arrays by plain ndarray views, in place where the container is mutable."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, np.ndarray):
        out = obj.view(np.ndarray)
        memo[key] = out
        if out.dtype.hasobject:
            flat = out.reshape(-1)
            for i in range(flat.size):
                flat[i] = _plain(flat[i], memo)
        return out
    memo[key] = obj
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _plain(obj[k], memo)
    elif isinstance(obj, list):
        obj[:] = [_plain(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        memo[key] = tuple(_plain(v, memo) for v in obj)
    return memo[key]


def load_pickle(path: Path) -> Any:
    """Load ``path`` with :class:`RestrictedUnpickler`; errors are one line naming the file."""
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
    except RecursionError:
        raise UnsafePickleError(f"{path}: nested too deeply for a metadata pickle") from None
    except MemoryError:
        raise UnsafePickleError(f"{path}: asks for more memory than a metadata pickle may use") from None
    except Exception as e:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


def expanded_size(obj: Any, _memo: dict[int, tuple[int, int]] | None = None) -> tuple[int, int]:
    """(values, characters) of ``obj`` once written as JSON, counting shared references every time they are
    reached; memoised per object, so it costs one visit per distinct object however large the expansion."""
    memo = {} if _memo is None else _memo
    key = id(obj)
    if key in memo:
        return memo[key]
    memo[key] = (1, 0)  # a cycle (not JSON anyway) counts once
    if isinstance(obj, dict):
        parts = [expanded_size(k, memo) for k in obj] + [expanded_size(v, memo) for v in obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        parts = [expanded_size(v, memo) for v in obj]
    elif isinstance(obj, np.ndarray):
        parts = [expanded_size(v, memo) for v in obj.reshape(-1)] if obj.dtype.hasobject else []
        parts.append((obj.size, obj.nbytes))
    elif isinstance(obj, (str, bytes, bytearray)):
        parts = [(0, len(obj))]
    else:
        parts = []
    size = (1 + sum(p[0] for p in parts), sum(p[1] for p in parts))
    memo[key] = size
    return size


def to_jsonable(obj: Any, where: str = "metadata") -> Any:
    """Plain JSON values from unpickled data: arrays -> lists, tuples/sets -> lists, bytes -> str, numpy scalars.

    Raises :class:`UnsafePickleError` (before converting anything) when the result would hold more than
    :data:`MAX_JSON_VALUES` values or :data:`MAX_JSON_CHARS` characters."""
    values, chars = expanded_size(obj)
    if values > MAX_JSON_VALUES or chars > MAX_JSON_CHARS:
        raise UnsafePickleError(
            f"{where}: expands to {values} values and {chars} characters as JSON (limits {MAX_JSON_VALUES} and "
            f"{MAX_JSON_CHARS}; shared references repeated); metadata is much smaller, not loaded"
        )
    return _jsonable(obj, where)


def _jsonable(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        return {str(_key(k)): _jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, (list, tuple)):  # ``where`` names the innermost dict key (cheap on long lists)
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v, where) for v in obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8")
    if isinstance(obj, np.generic):
        return _jsonable(obj.item(), where)
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
    try:
        data = to_jsonable(load_pickle(path), where=str(path))
    except RecursionError:
        raise UnsafePickleError(f"{path}: nested too deeply for metadata") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: metadata must be a dict, got {type(data).__name__}")
    json.dumps(data, allow_nan=False)  # proves it serialises
    return data
