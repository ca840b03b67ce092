"""``dataset_all.pkl`` of the "Rethinking of PAR" code (its ``format_*.py`` scripts).

The pickle holds an ``easydict.EasyDict`` (a dict subclass) with ``description``, ``root`` (the
image folder on the machine that wrote it), ``image_name`` (N names), ``label`` (N x M array),
``attr_name`` (M names), ``label_idx.eval`` (0-based columns of the evaluated attributes),
``partition`` with ``train`` / ``val`` / ``trainval`` / ``test`` (0-based index arrays, or lists
of five such arrays for PETA and RAP) and extras such as ``weight_train``.

Pickles run code while loading, so this one is read with an unpickler that rebuilds only plain
containers and numpy arrays, scalars and dtypes; ``EasyDict`` becomes a plain dict subclass of
ours (easydict is never imported). Any other global is refused before it is called.

A pickle can also ask for memory without running code: a constructor called with a huge size
(``numpy.ndarray((10**10,))``), a byte string or memo index whose declared size is far beyond
the file (CPython's own unpickler allocates those before reading). So the file is read whole and
unpickled by the pure-Python unpickler (its reads stop at the end of the data, its memo is a
dict), every array or scalar the constructors build is counted against a budget of
:data:`MEMORY_PER_FILE_BYTE` bytes per byte of the file (plus :data:`MEMORY_SLACK`), and the
result may hold at most one object per byte of the file, nested at most :data:`MAX_DEPTH` deep
(shared references count each time they are reached, so that no later ``np.asarray`` or ``str``
of the result expands it).
"""

from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import contextvars
import copyreg
import importlib
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pedattr.data.annotations import AnnotationError, RawAnnotations, check_image_names
from pedattr.data.formats._common import (
    PathLike,
    assign_splits,
    build,
    check_unique,
    indices_from,
    label_matrix,
    pick_partition,
)

DEFAULT_FILE = "dataset_all.pkl"
#: Bytes of arrays and scalars a pickle may build per byte of its file: an object array holds
#: an 8-byte pointer per element, and each element costs at least one byte of the pickle.
MEMORY_PER_FILE_BYTE = 8
#: Allowance on top, for the smallest files.
MEMORY_SLACK = 1 << 20
#: Deepest nesting of containers accepted (a dataset_all.pkl nests about four deep).
MAX_DEPTH = 32


class PlainDict(dict):
    """Stands in for ``easydict.EasyDict``; only its items are read."""


class _PickleTooBig(Exception):
    """A constructor in the pickle asked for more memory than the file can justify."""


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("_budget", default=None)


class _Budget:
    """Bytes the constructors of one pickle may still build."""

    def __init__(self, file_size: int) -> None:
        self.left = MEMORY_PER_FILE_BYTE * file_size + MEMORY_SLACK

    def take(self, shape: Any, dtype: Any) -> None:
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and n >= 0 for n in shape
        ):
            raise _PickleTooBig(f"an array of shape {shape!r}")
        itemsize = np.dtype(dtype).itemsize
        size = math.prod(int(n) for n in shape) * max(itemsize, 1)
        if size > self.left:
            raise _PickleTooBig(f"an array of {size} bytes")
        self.left -= size


def _take(shape: Any, dtype: Any) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.take(shape, dtype)


class _CheckedArray(np.ndarray):
    """``numpy.ndarray`` as the pickle sees it: every size is checked before it is allocated.

    Arrays read from a pickle are of this class (a plain ndarray in every other respect;
    ``np.asarray`` gives the base class).
    """

    def __new__(cls, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> _CheckedArray:
        _take(shape, dtype)
        return super().__new__(cls, shape, dtype, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, data), or without the version (older numpy).
        if isinstance(state, tuple) and len(state) in (4, 5):
            shape, dtype = state[-4], state[-3]
            _take(shape, dtype if isinstance(dtype, np.dtype) else np.uint8)
        super().__setstate__(state)


def _numpy_core(submodule: str, name: str) -> Any:
    # Pickles name numpy.core (numpy 1) or numpy._core (numpy 2); use what is installed.
    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"numpy has no {submodule}.{name}")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype not in (np.ndarray, _CheckedArray):
        raise _PickleTooBig(f"an array of class {subtype!r}")
    _take(shape, dtype)
    return _numpy_core("multiarray", "_reconstruct")(_CheckedArray, shape, dtype)


def _scalar(dtype: Any, *args: Any) -> Any:
    _take((), dtype)
    return _numpy_core("multiarray", "scalar")(dtype, *args)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _take(shape, dtype)
    return _numpy_core("numeric", "_frombuffer")(buffer, dtype, shape, order)


def _encode(text: Any, encoding: str = "utf-8", *args: Any) -> bytes:
    # Protocol 2 stores bytes (numpy's raw data) as text to re-encode as latin1; no other codec.
    if encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise _PickleTooBig(f"bytes in encoding {encoding!r}")
    return codecs.encode(text, "latin1", *args)


# What plain containers and numpy arrays, scalars and dtypes need, and nothing that runs code or
# builds something large from a small argument (bytearray(n), range(n)).
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _CheckedArray,
    ("numpy", "dtype"): np.dtype,
    ("easydict", "EasyDict"): PlainDict,
    # Protocols 0/1 rebuild dict subclasses with _reconstructor(cls, base, state); cls and
    # base are globals resolved here too, so only allowed classes are ever built.
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("_codecs", "encode"): _encode,
    **{
        ("builtins", name): getattr(builtins, name)
        for name in ("set", "frozenset", "complex", "object", "dict")
    },
}
_NUMPY_CORE: dict[tuple[str, str], Any] = {
    (f"{package}.{submodule}", name): function
    for package in ("numpy.core", "numpy._core")
    for submodule, name, function in (
        ("multiarray", "_reconstruct", _reconstruct),
        ("multiarray", "scalar", _scalar),
        ("numeric", "_frombuffer", _frombuffer),
    )
}


class _RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python unpickler
    """Resolves only the globals of :data:`_ALLOWED`, numpy's core constructors and dtypes."""

    def __init__(self, data: bytes, path: Path) -> None:
        # latin1: numpy arrays from Python 2 pickles
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 write Python 2 names (copy_reg, __builtin__); map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if (module, name) in _NUMPY_CORE:
            return _NUMPY_CORE[module, name]
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy 2 dtype classes
            dtype_class = getattr(importlib.import_module("numpy.dtypes"), name, None)
            if isinstance(dtype_class, type) and issubclass(dtype_class, np.dtype):
                return dtype_class
        raise AnnotationError(
            f"{self.path}: refusing to load global '{module}.{name}': a dataset_all.pkl holds "
            "only containers and numpy arrays"
        )


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy types, in bounded memory."""
    data = path.read_bytes()
    token = _budget.set(_Budget(len(data)))
    try:
        result = _RestrictedUnpickler(data, path).load()
    except AnnotationError:
        raise
    except (_PickleTooBig, MemoryError) as exc:
        raise AnnotationError(
            f"{path}: refusing to build {exc or 'the data'}: more than a pickle of "
            f"{len(data)} bytes can hold"
        ) from None
    except EOFError:
        raise AnnotationError(f"{path}: not a readable pickle (the data ends early)") from None
    except Exception as exc:  # a truncated or foreign file raises many kinds
        raise AnnotationError(f"{path}: not a readable pickle ({exc})") from exc
    finally:
        _budget.reset(token)
    _check_size(result, len(data), path)
    return result


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return value.ravel().tolist()
    return []


def _check_size(result: Any, file_size: int, path: Path) -> None:
    """Refuse a result that expands (through shared references) beyond the file's size."""
    limit = file_size + 1024
    visited = 0
    stack = [(result, 0)]
    while stack:
        value, depth = stack.pop()
        visited += 1
        if depth > MAX_DEPTH or visited > limit:
            problem = (
                f"containers nested more than {MAX_DEPTH} deep"
                if depth > MAX_DEPTH
                else f"more objects than a pickle of {file_size} bytes holds (shared references)"
            )
            raise AnnotationError(f"{path}: refusing the pickle's data: {problem}")
        if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
            raise AnnotationError(f"{path}: a dict in the pickle has keys that are not strings")
        stack.extend((child, depth + 1) for child in _children(value))


def _field(data: dict, name: str, path: Path) -> Any:
    if name not in data:
        raise AnnotationError(f"{path}: missing field '{name}'; the file has {sorted(data)}")
    return data[name]


def _string_list(value: Any, path: Path, field: str) -> list[str]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise AnnotationError(f"{path}: field '{field}' must be a list of strings")
    return list(value)


def _is_index_list(value: Any) -> bool:
    """Whether a partition entry is a list of per-partition index arrays."""
    if isinstance(value, np.ndarray):
        return value.dtype == object or value.ndim == 2
    return isinstance(value, (list, tuple)) and any(
        isinstance(v, (list, tuple, np.ndarray)) for v in value
    )


def _split_indices(
    partitions: dict, key: str, partition: int, size: int, path: Path
) -> tuple[str, np.ndarray]:
    value = partitions[key]
    field = f"partition.{key}"
    if _is_index_list(value):
        chosen = pick_partition(len(value), partition, file=path, field=field)
        value, field = value[chosen], f"{field}[{chosen}]"
    return field, indices_from(np.asarray(value), size=size, file=path, field=field, base=0)


def _image_root(recorded: Any, pkl_dir: Path, image_root: PathLike | None) -> tuple[Path, str]:
    if image_root is not None:
        return Path(image_root), "given"
    if not isinstance(recorded, str):
        return pkl_dir, "pickle folder (no root recorded)"
    recorded_path = Path(recorded)
    if recorded_path.is_dir():
        return recorded_path, "recorded root"
    # The format scripts put images beside the pickle (<dataset>/data, /images, /RAP_dataset);
    # the recorded absolute path is usually from another machine.
    beside = pkl_dir / recorded_path.name
    if beside.is_dir():
        return beside, "recorded root's folder name beside the pickle"
    if not recorded_path.is_absolute():
        return pkl_dir / recorded_path, "recorded root, relative to the pickle"
    return beside, "recorded root's folder name beside the pickle (neither found)"


def read_rethinking_pkl(
    path_or_root: PathLike,
    *,
    partition: int = 0,
    image_root: PathLike | None = None,
    allow_external_images: bool = False,
) -> RawAnnotations:
    """Read a ``dataset_all.pkl`` of the "Rethinking of PAR" code.

    Args:
        path_or_root: the pickle, or the folder holding ``dataset_all.pkl``.
        partition: which partition to use where the pickle holds several (PETA, RAP), 0-based.
        image_root: the image folder; by default the recorded ``root`` if it exists, else the
            folder of that name beside the pickle.
        allow_external_images: accept image names that are absolute or climb out of the
            image folder with ``..`` (refused by default, naming the file and entry).

    Returns:
        The attributes of ``label_idx.eval`` (all when absent), in that order; ``train`` (or
        ``trainval`` when there is no ``train``), ``val`` and ``test`` as splits.
    """
    path = Path(path_or_root)
    if path.is_dir():
        path = path / DEFAULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    data = load_restricted_pickle(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a dict (EasyDict), found {type(data).__name__}")
    images = _string_list(_field(data, "image_name", path), path, "image_name")
    check_unique(images, file=path, field="image_name")
    check_image_names(images, file=path, field="image_name", allow_external=allow_external_images)
    attributes = _string_list(_field(data, "attr_name", path), path, "attr_name")
    label = _field(data, "label", path)
    if not isinstance(label, np.ndarray) or label.shape != (len(images), len(attributes)):
        shape = getattr(label, "shape", type(label).__name__)
        raise AnnotationError(
            f"{path}: field 'label' has shape {shape}, expected ({len(images)}, "
            f"{len(attributes)}) for the names in 'image_name' and 'attr_name'"
        )
    columns = _evaluated_columns(data, len(attributes), path)
    evaluated = [attributes[c] for c in columns]
    check_unique(evaluated, file=path, field="attr_name")
    labels = label_matrix(label[:, columns], file=path, field="label", columns=columns.tolist())
    splits, provenance = _splits(data, partition, len(images), path)
    description = data.get("description", "")
    root, root_from = _image_root(data.get("root"), path.parent, image_root)
    return build(
        attribute_names=evaluated,
        image_names=images,
        labels=labels,
        splits=splits,
        image_root=root,
        source={
            "format": "rethinking-pkl",
            "annotation": str(path),
            "description": description if isinstance(description, str) else "",
            "attributes_in_file": len(attributes),
            "evaluated_attributes": "label_idx.eval" if "label_idx" in data else "all",
            "image_root_from": root_from,
            **provenance,
        },
    )


def _evaluated_columns(data: dict, count: int, path: Path) -> np.ndarray:
    # Older pickles have no label_idx; their labels are the evaluated ones already.
    if "label_idx" not in data:
        return np.arange(count)
    label_idx = data["label_idx"]
    if not isinstance(label_idx, dict) or "eval" not in label_idx:
        raise AnnotationError(f"{path}: missing field 'label_idx.eval'")
    return indices_from(
        np.asarray(label_idx["eval"]), size=count, file=path, field="label_idx.eval", base=0
    )


def _splits(data: dict, partition: int, size: int, path: Path) -> tuple[np.ndarray, dict]:
    partitions = _field(data, "partition", path)
    if not isinstance(partitions, dict):
        raise AnnotationError(f"{path}: field 'partition' must be a dict")
    # RAP v1 pickles have only trainval / test; it becomes "train" (no val split).
    keys = {"train": "train" if "train" in partitions else "trainval", "val": "val", "test": "test"}
    for split in ("train", "test"):
        if keys[split] not in partitions:
            raise AnnotationError(
                f"{path}: missing field 'partition.{keys[split]}'; the partition has "
                f"{sorted(partitions)}"
            )
    # val is part of trainval: used only beside train.
    used = {
        split: key
        for split, key in keys.items()
        if key in partitions and not (split == "val" and keys["train"] == "trainval")
    }
    index_sets = {
        split: _split_indices(partitions, key, partition, size, path) for split, key in used.items()
    }
    several = any(_is_index_list(partitions[key]) for key in used.values())
    provenance = {"partition": partition if several else None, "partition_keys": used}
    return assign_splits(size, index_sets, file=path), provenance
