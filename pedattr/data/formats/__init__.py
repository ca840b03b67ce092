"""Readers for the official annotation formats of the PAR datasets, and plain user formats.

Each reader returns :class:`~pedattr.data.annotations.RawAnnotations` with ``source`` filled in
(format, annotation file, partition, ...) and raises
:class:`~pedattr.data.annotations.AnnotationError` naming the file and the field when a file does
not match its format (:class:`FileNotFoundError` when it is missing).

========================  ==============================================================
``pa100k``                PA-100K ``annotation.mat``
``peta``                  PETA ``PETA.mat``, 35-attribute protocol, ``partition=0..4``
``rap1``                  RAP v1 ``RAP_annotation.mat``, 51 attributes, ``partition=0..4``
``rap2``                  RAP v2 ``RAP_annotation.mat``, 54 attributes, ``partition=0..4``
``rethinking-pkl``        ``dataset_all.pkl`` of the "Rethinking of PAR" code
``text-lists``            the authors' lists, ``path l1 ... lM``, one file per split
``csv``                   ``image,<attr>,...[,split]``
========================  ==============================================================

MATLAB v7.3 (HDF5) copies of the ``.mat`` files need h5py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pedattr.data.annotations import RawAnnotations
from pedattr.data.formats._common import PathLike
from pedattr.data.formats.pa100k import read_pa100k
from pedattr.data.formats.peta import read_peta
from pedattr.data.formats.rap import read_rap1, read_rap2
from pedattr.data.formats.rethinking import read_rethinking_pkl
from pedattr.data.formats.text import read_csv, read_text_lists

Reader = Callable[..., RawAnnotations]

FORMATS: dict[str, Reader] = {
    "pa100k": read_pa100k,
    "peta": read_peta,
    "rap1": read_rap1,
    "rap2": read_rap2,
    "rethinking-pkl": read_rethinking_pkl,
    "text-lists": read_text_lists,
    "csv": read_csv,
}


def _reader(format_name: str) -> Callable[..., RawAnnotations]:
    key = format_name.strip().lower().replace("_", "-")
    if key not in FORMATS:
        raise ValueError(f"unknown annotation format {format_name!r}; known: {sorted(FORMATS)}")
    return FORMATS[key]


def reader_options(format_name: str) -> list[str]:
    """The keyword options the reader of ``format_name`` takes, in its signature's order."""
    return [
        name
        for name, p in inspect.signature(_reader(format_name)).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def read_annotations(format_name: str, root: PathLike, **options: Any) -> RawAnnotations:
    """Read a dataset's annotations with the reader of ``format_name``.

    Args:
        format_name: a key of :data:`FORMATS` (case and ``_`` / ``-`` do not matter).
        root: the dataset folder or annotation file, as the reader expects.
        **options: the reader's keyword options (``partition``, ``annotation``, ...).
    """
    reader = _reader(format_name)
    key = format_name.strip().lower().replace("_", "-")
    try:
        inspect.signature(reader).bind(root, **options)
    except TypeError as exc:
        raise ValueError(
            f"format {key!r} does not take options {sorted(options)} ({exc}); its options: "
            f"{reader_options(format_name)}"
        ) from exc
    return reader(root, **options)


__all__ = [
    "FORMATS",
    "read_annotations",
    "read_csv",
    "read_pa100k",
    "read_peta",
    "read_rap1",
    "read_rap2",
    "read_rethinking_pkl",
    "read_text_lists",
]
