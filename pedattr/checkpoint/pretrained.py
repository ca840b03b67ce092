"""Models by name: :func:`from_pretrained` and the names every ``--checkpoint`` takes.

A name is resolved to a checkpoint file by :func:`resolve_checkpoint`, in this order:

1. a path that exists: a checkpoint file, or a folder in the hub layout
   (:func:`pedattr.checkpoint.hub.save_pretrained`). What is on disk always wins, so a folder
   ``user/repo`` in the working directory is that folder, and a file named ``alm-rap`` is that
   file;
2. ``hf://user/repo[@revision]``: always the Hugging Face Hub, whatever is on disk;
3. a built-in name (:data:`BUILTIN_MODELS`: ``alm-peta``, ``alm-rap``, ``alm-pa100k``): the
   authors' released model, converted on first use and cached;
4. ``user/repo[@revision]`` (one slash, no file suffix such as ``.safetensors``, and ``user``
   not a folder here, which makes a mistyped ``runs/demo`` a missing path): a Hugging Face Hub
   repository, fetched into huggingface_hub's cache (its offline mode, ``HF_HUB_OFFLINE=1``,
   is honoured: then only the cache is read);
5. anything else is a missing file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pedattr.checkpoint import hub
from pedattr.checkpoint.convert import (
    AUTHORS_ATTRIBUTES,
    DATASET_TITLES,
    convert_authors_checkpoint,
)
from pedattr.checkpoint.format import CheckpointError, load_model
from pedattr.models.model import AttributeModel

__all__ = [
    "BUILTIN_MODELS",
    "AUTHORS_REPOSITORY",
    "BuiltinModel",
    "from_pretrained",
    "pedattr_home",
    "resolve_checkpoint",
]

#: Where the paper's authors published their code and, on its front page under "Pretrained
#: Models", the links to their trained models.
AUTHORS_REPOSITORY = "https://github.com/chufengt/iccv19_attribute"
#: The environment variable naming pedattr's own folder (default ``~/.cache/pedattr``).
HOME_VARIABLE = "PEDATTR_HOME"
#: The prefix that makes a name a Hugging Face Hub repository whatever is on disk.
HUB_PREFIX = "hf://"

# One slash between an owner and a name of the Hub's characters, then an optional @revision.
_HUB_ID = re.compile(
    r"(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95})"
    r"(?:@(?P<revision>[^\s@]+))?"
)
# Suffixes that say "a file", so that a missing ``runs/best.safetensors`` is reported as a missing
# file rather than looked up on the Hub.
_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar", ".onnx", ".json", ".bin", ".ckpt")


@dataclass(frozen=True)
class BuiltinModel:
    """One of the authors' released ALM models: what it is, and where its file comes from."""

    name: str
    dataset: str  # a key of AUTHORS_ATTRIBUTES
    file_name: str  # as the download is named in the code that loads it
    url: str  # the authors' link (Google Drive), from their repository's front page
    reported_mA: float  # the mA the authors report for this file there (%)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return AUTHORS_ATTRIBUTES[self.dataset]

    @property
    def title(self) -> str:
        return f"the authors' ALM for {DATASET_TITLES[self.dataset]}"


#: The built-in names. The links and mA are those of the authors' repository page; the file
#: names are those under which code using the downloads loads them (the page gives links only).
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel(
            "alm-peta",
            "peta",
            "peta_epoch_31.pth.tar",
            "https://drive.google.com/file/d/1cvX43Qn_vydzT_jnmgwYUUe9hIA161PH/view",
            86.34,
        ),
        BuiltinModel(
            "alm-rap",
            "rap",
            "rap_epoch_9.pth.tar",
            "https://drive.google.com/file/d/15paMK0-rKDsuzptDPK5kH2JuL8QO0HyS/view",
            81.86,
        ),
        BuiltinModel(
            "alm-pa100k",
            "pa100k",
            "pa100k_epoch_8.pth.tar",
            "https://drive.google.com/file/d/1xIw3jpvE1pDC3U464kcFJ58iSKCRNQ63/view",
            80.45,
        ),
    )
}


def pedattr_home() -> Path:
    """pedattr's folder: ``$PEDATTR_HOME``, else ``$XDG_CACHE_HOME/pedattr``, else
    ``~/.cache/pedattr``. The authors' files go in its ``authors/``, converted models are cached
    in its ``models/``."""
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pedattr"


def from_pretrained(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu"
) -> AttributeModel:
    """A model by name, in eval mode on ``device``: a checkpoint file, a folder written by
    :func:`pedattr.save_pretrained`, a Hugging Face Hub repository ``user/repo[@revision]``
    (or ``hf://user/repo``), or a built-in name (``alm-peta``, ``alm-rap``, ``alm-pa100k``).

    The same as :func:`pedattr.load_model`, which takes the same names; the rules are in
    :func:`resolve_checkpoint`.

    Raises:
        CheckpointError: the name resolves to nothing usable (the message says why in one line;
            for a built-in name whose file is absent, where to download it and where to put it).
    """
    return load_model(name_or_path, device=device)


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """The local checkpoint file that ``spec`` names (see the module's documentation).

    Raises:
        CheckpointError: nothing there, a folder that is not a pedattr model folder, a Hub
            repository that cannot be had, or a built-in model whose file is absent.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return hub.checkpoint_in_folder(path, text)
    if text.startswith(HUB_PREFIX):
        match = _HUB_ID.fullmatch(text[len(HUB_PREFIX) :])
        if match is None:
            raise CheckpointError(f"{text}: not a Hugging Face Hub id (hf://user/repo[@revision])")
        return hub.hub_checkpoint(match["repo"], match["revision"], text)
    if text in BUILTIN_MODELS:
        return builtin_checkpoint(BUILTIN_MODELS[text])
    match = _HUB_ID.fullmatch(text)
    if match is not None and not _local_looking(match["repo"]):
        return hub.hub_checkpoint(match["repo"], match["revision"], text)
    if os.sep in text or "/" in text or text.lower().endswith(_FILE_SUFFIXES):
        raise CheckpointError(f"{text}: no such checkpoint file")
    raise CheckpointError(
        f"{text}: no such checkpoint file, and not a model name (built-in: "
        f"{', '.join(BUILTIN_MODELS)}; a Hugging Face Hub repository is user/repo)"
    )


def _local_looking(repo: str) -> bool:
    """Whether ``owner/name`` is surely a mistyped local path: a file suffix, or an owner that
    is a folder here (``runs/demo`` with a ``runs/`` folder is not looked up on the Hub)."""
    owner = repo.split("/")[0]
    return repo.lower().endswith(_FILE_SUFFIXES) or Path(owner).is_dir()


def builtin_checkpoint(model: BuiltinModel, home: str | os.PathLike | None = None) -> Path:
    """The converted checkpoint of a built-in model, converting the authors' file on first use.

    The authors' file is read from ``HOME/authors/FILE``; the conversion is cached as
    ``HOME/models/NAME.safetensors`` and used as long as it is not older than the file.

    Raises:
        CheckpointError: the file is absent (the message says where to download it and where to
            put it) or is not the authors' model for that dataset.
    """
    root = Path(home) if home is not None else pedattr_home()
    source = root / "authors" / model.file_name
    cached = root / "models" / f"{model.name}.safetensors"
    if cached.is_file() and not (
        source.is_file() and source.stat().st_mtime > cached.stat().st_mtime
    ):
        return cached
    if not source.is_file():
        raise CheckpointError(
            f"{model.name}: {model.title} is not here yet: download {model.file_name} from "
            f"{model.url} (linked from {AUTHORS_REPOSITORY}) and put it at {source} "
            f"(the folder is ${HOME_VARIABLE}/authors)"
        )
    reported = {"mA": model.reported_mA, "split": "test", "by": AUTHORS_REPOSITORY}
    try:
        convert_authors_checkpoint(
            source,
            cached,
            dataset=model.dataset,
            extra={"pretrained": {"name": model.name, "url": model.url, "reported": reported}},
        )
    except (ValueError, FileNotFoundError) as err:
        raise CheckpointError(f"{model.name}: {err}") from err
    return cached
