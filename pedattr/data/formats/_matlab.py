"""Reading MATLAB ``.mat`` files, v5 (scipy) and v7.3 (HDF5, h5py), into one plain form.

Both versions become the same Python values, so each format reader is written once:

* numeric and logical arrays: ``np.ndarray`` in MATLAB's shape (at least 2-D);
* char arrays: ``str`` (a char matrix of several rows: an object array of row strings);
* cell arrays: object ``np.ndarray`` in MATLAB's shape, elements converted;
* a 1x1 struct: ``dict`` of fields in MATLAB's field order;
* a struct array: object ``np.ndarray`` of such dicts in MATLAB's shape.

:class:`MatFields` wraps a struct (or the file's variables) and raises
:class:`~pedattr.data.annotations.AnnotationError` naming the file and the field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pedattr.data.annotations import AnnotationError

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 puts its superblock at 0 or after a user block of 512 * 2**k bytes; MATLAB v7.3 uses 512.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file (a MATLAB v7.3 ``.mat`` file is one)."""
    with open(path, "rb") as handle:
        for offset in _HDF5_OFFSETS:
            handle.seek(offset)
            if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return True
    return False


def load_mat(path: Path, names: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """Load the variables of a ``.mat`` file in the plain form described above.

    Args:
        path: the ``.mat`` file.
        names: load only these variables (all when None); absent ones are simply missing.

    Returns:
        The variables by name, and the MAT-file version ("5" or "7.3").
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    if is_hdf5(path):
        return _load_v73(path, names), "7.3"
    return _load_v5(path, names), "5"


# --------------------------------------------------------------------------- MATLAB v5


def _load_v5(path: Path, names: list[str] | None) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        # Unsqueezed records keep MATLAB's shapes, so a one-image cell stays a cell.
        raw = loadmat(
            path, variable_names=names, squeeze_me=False, struct_as_record=True, mat_dtype=False
        )
    except Exception as exc:  # scipy raises many types for a file that is not a MAT file
        raise AnnotationError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    return {key: _from_v5(value) for key, value in raw.items() if not key.startswith("__")}


def _from_v5(value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.names is not None:  # struct (array)
        structs = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            record = value[index]
            structs[index] = {name: _from_v5(record[name]) for name in value.dtype.names}
        return structs[(0,) * structs.ndim] if structs.size == 1 else structs
    if value.dtype.kind == "U":  # char array; chars_as_strings gives one string per row
        rows = [str(row) for row in value.ravel()]
        return _char_rows(rows)
    if value.dtype == object:  # cell
        cell = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            cell[index] = _from_v5(value[index])
        return cell
    return value


def _char_rows(rows: list[str]) -> Any:
    if len(rows) <= 1:
        return rows[0] if rows else ""
    cell = np.empty((len(rows), 1), dtype=object)
    cell[:, 0] = rows
    return cell


# --------------------------------------------------------------------------- MATLAB v7.3


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("install h5py to read MATLAB v7.3 files (pip install h5py)") from exc
    return h5py


def _load_v73(path: Path, names: list[str] | None) -> dict[str, Any]:
    h5py = _import_h5py()
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise AnnotationError(f"{path}: not a readable MATLAB v7.3 file ({exc})") from exc
    with handle:
        # "#refs#" holds the elements of cells and struct arrays, "#subsystem#" MATLAB objects.
        keys = [key for key in handle if not key.startswith("#")]
        if names is not None:
            keys = [key for key in keys if key in names]
        return {key: _from_h5(handle[key], h5py) for key in keys}


def _attr_text(node: Any, name: str) -> str | None:
    value = node.attrs.get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_names(group: Any) -> list[str]:
    # h5py lists members alphabetically; MATLAB keeps the real order in MATLAB_fields.
    stored = group.attrs.get("MATLAB_fields")
    if stored is None:
        return list(group.keys())
    return [np.asarray(chars).tobytes().decode() for chars in stored]


def _is_reference(dataset: Any, h5py: Any) -> bool:
    return h5py.check_dtype(ref=dataset.dtype) is not None


def _from_h5(node: Any, h5py: Any) -> Any:
    if isinstance(node, h5py.Group):
        return _struct_from_h5(node, h5py)
    matlab_class = _attr_text(node, "MATLAB_class")
    if node.attrs.get("MATLAB_empty"):
        return _empty(node[()], matlab_class)
    if _is_reference(node, h5py):  # a cell: references to its elements
        return _deref_array(node, h5py)
    data = node[()].T  # HDF5 keeps MATLAB's column-major data with the dimensions reversed
    if matlab_class == "char":
        return _char_rows([_utf16(row) for row in np.atleast_2d(data)])
    if data.dtype.kind in "SO":  # strings written by tools other than MATLAB
        return _char_rows([v.decode() if isinstance(v, bytes) else str(v) for v in data.ravel()])
    if matlab_class == "logical":
        return data.astype(bool)
    return data


def _utf16(codes: np.ndarray) -> str:
    # MATLAB chars are UTF-16 code units.
    return np.asarray(codes, dtype="<u2").tobytes().decode("utf-16-le")


def _empty(shape_data: np.ndarray, matlab_class: str | None) -> Any:
    shape = tuple(int(d) for d in np.ravel(shape_data))
    if matlab_class == "char":
        return ""
    if matlab_class == "cell":
        return np.empty(shape, dtype=object)
    return np.zeros(shape)


def _deref_array(dataset: Any, h5py: Any) -> np.ndarray:
    refs = dataset[()].T
    out = np.empty(refs.shape, dtype=object)
    handle = dataset.file
    for index in np.ndindex(refs.shape):
        out[index] = _from_h5(handle[refs[index]], h5py)
    return out


def _struct_from_h5(group: Any, h5py: Any) -> Any:
    fields = _field_names(group)
    members = {name: group[name] for name in fields if name in group}
    # A struct array stores each field as an array of references without MATLAB_class; a
    # scalar struct stores its fields directly (a cell field says MATLAB_class "cell").
    is_array = bool(members) and all(
        isinstance(m, h5py.Dataset) and _is_reference(m, h5py) and "MATLAB_class" not in m.attrs
        for m in members.values()
    )
    if not is_array:
        return {name: _from_h5(member, h5py) for name, member in members.items()}
    columns = {name: _deref_array(member, h5py) for name, member in members.items()}
    shape = next(iter(columns.values())).shape
    structs = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        structs[index] = {name: column[index] for name, column in columns.items()}
    return structs[(0,) * len(shape)] if structs.size == 1 else structs


# --------------------------------------------------------------------------- checked access


class MatFields:
    """The fields of a struct (or a file's variables), with errors naming file and field.

    Args:
        values: field name -> value in the plain form of :func:`load_mat`.
        file: the ``.mat`` file, for error messages.
        prefix: the field path of this struct (e.g. ``peta.partion_attribute{2}``), "" for the
            file's variables.
    """

    def __init__(self, values: Mapping[str, Any], file: Path, prefix: str = "") -> None:
        self.values = dict(values)
        self.file = file
        self.prefix = prefix

    @classmethod
    def load(cls, path: Path, names: list[str] | None = None) -> tuple[MatFields, str]:
        """The variables of a ``.mat`` file, and its version ("5" or "7.3")."""
        values, version = load_mat(path, names)
        return cls(values, path), version

    @property
    def field_names(self) -> list[str]:
        return list(self.values)

    def path_of(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> AnnotationError:
        return AnnotationError(f"{self.file}: field '{self.path_of(name)}' {problem}")

    def find(self, *names: str) -> str:
        """The first of ``names`` (a field and its alternative spellings) that is present."""
        for name in names:
            if name in self.values:
                return name
        also = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        where = f"struct '{self.prefix}'" if self.prefix else "file"
        raise AnnotationError(
            f"{self.file}: missing field '{self.path_of(names[0])}'{also}; the {where} has "
            f"{self.field_names}"
        )

    def struct(self, *names: str) -> MatFields:
        """A 1x1 struct field."""
        name = self.find(*names)
        value = self.values[name]
        if not isinstance(value, dict):
            raise self.error(name, f"must be a 1x1 struct, found {_describe(value)}")
        return MatFields(value, self.file, self.path_of(name))

    def structs(self, *names: str) -> list[MatFields]:
        """A struct array or a cell array of 1x1 structs, as a list in MATLAB's order."""
        name = self.find(*names)
        value = self.values[name]
        elements = [value] if isinstance(value, dict) else _vector(value)
        if elements is None or not all(isinstance(e, dict) for e in elements):
            raise self.error(
                name,
                f"must be a vector of structs (struct or cell array), found {_describe(value)}",
            )
        # Element paths are 1-based, as MATLAB writes them.
        return [
            MatFields(e, self.file, f"{self.path_of(name)}{{{i + 1}}}")
            for i, e in enumerate(elements)
        ]

    def strings(self, *names: str) -> list[str]:
        """A vector cell array of strings (or one string, or a char matrix), as a list."""
        name = self.find(*names)
        value = self.values[name]
        if isinstance(value, str):
            return [value]
        elements = _vector(value)
        if elements is None:
            raise self.error(name, f"must be a cell array of strings, found {_describe(value)}")
        for i, element in enumerate(elements):
            if not isinstance(element, str):
                raise self.error(
                    name,
                    f"must be a cell array of strings; element {i + 1} is {_describe(element)}",
                )
        return list(elements)

    def matrix(self, *names: str) -> np.ndarray:
        """A 2-D numeric or logical array."""
        name = self.find(*names)
        value = self.values[name]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" or value.ndim != 2:
            raise self.error(name, f"must be a 2-D numeric matrix, found {_describe(value)}")
        return value

    def vector(self, *names: str) -> tuple[str, np.ndarray]:
        """A numeric row or column vector, flattened; returns the field name used as well."""
        name = self.find(*names)
        value = self.values[name]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise self.error(name, f"must be a numeric vector, found {_describe(value)}")
        if sum(d != 1 for d in value.shape) > 1:
            raise self.error(name, f"must be a vector, found shape {value.shape}")
        return name, value.ravel()


def _vector(value: Any) -> list[Any] | None:
    """Elements of an object array with at most one non-singleton dimension, else None."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        return None
    if sum(d != 1 for d in value.shape) > 1:
        return None
    return list(value.ravel(order="F"))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a struct"
    if isinstance(value, str):
        return f"the string {value!r:.40}"
    if isinstance(value, np.ndarray):
        kind = "a cell array" if value.dtype == object else f"a {value.dtype} array"
        return f"{kind} of shape {value.shape}"
    return type(value).__name__
