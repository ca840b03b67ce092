"""The hub layout: a folder that holds a model with its description, on disk or on the
Hugging Face Hub.

``save_pretrained`` writes three files:

- ``model.safetensors``: the pedattr checkpoint, as ``pedattr train`` writes it;
- ``config.json``: ``library_name: pedattr``, the checkpoint's file name and its model
  configuration and thresholds, so that a folder can be recognised (and a foreign one refused)
  before its weights are read or downloaded;
- ``README.md``: the model card (:mod:`pedattr.checkpoint.card`).

Reading a Hub repository and :func:`push_to_hub` use ``huggingface_hub`` (the ``hub`` extra),
imported only then; pushing is the only step that needs a network.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pedattr._version import __version__
from pedattr.checkpoint.card import model_card
from pedattr.checkpoint.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    checkpoint_bytes,
    load_checkpoint,
    read_metadata,
    validate_metadata,
)
from pedattr.errors import RunFailed
from pedattr.models.config import ModelConfig
from pedattr.models.model import AttributeModel
from pedattr.utils.io import atomic_write_files, make_folder

__all__ = ["checkpoint_in_folder", "hub_checkpoint", "push_to_hub", "save_pretrained"]

LIBRARY_NAME = "pedattr"
CHECKPOINT_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
_INSTALL = "pip install 'pedattr[hub]'"


def save_pretrained(
    source: AttributeModel | Checkpoint | str | os.PathLike,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    license: str | None = None,
) -> Path:
    """Write ``source`` in the hub layout into ``folder``: ``model.safetensors``,
    ``config.json`` and the model card ``README.md``, all three replaced together or not at all.

    Args:
        source: a model (its weights, configuration and ``thresholds``), a
            :class:`~pedattr.checkpoint.format.Checkpoint`, or a checkpoint path or name, whose
            metrics and training record the model card then reports.
        folder: created if needed; other files in it are left alone.
        repo_id: the Hub repository the card's usage examples name (default: the folder).
        license: the card's licence identifier (default: ``unknown`` for a conversion of the
            authors' weights, else ``apache-2.0``, pedattr's own).

    Returns:
        ``folder``.
    """
    checkpoint = _as_checkpoint(source)
    folder = make_folder(folder)
    data = checkpoint_bytes(checkpoint)
    config = json.dumps(folder_config(checkpoint), indent=2) + "\n"
    card = model_card(checkpoint, repo_id=repo_id or folder.name, license=license)
    atomic_write_files(
        [
            (folder / CHECKPOINT_FILE, lambda tmp: Path(tmp).write_bytes(data)),
            (folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(config, encoding="utf-8")),
            (folder / CARD_FILE, lambda tmp: Path(tmp).write_text(card, encoding="utf-8")),
        ]
    )
    return folder


def folder_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """The ``config.json`` of a model folder."""
    return {
        "library_name": LIBRARY_NAME,
        "checkpoint": CHECKPOINT_FILE,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "pedattr_version": __version__,
        "model": checkpoint.config.to_dict(),
        "thresholds": checkpoint.thresholds,
    }


def _as_checkpoint(source: AttributeModel | Checkpoint | str | os.PathLike) -> Checkpoint:
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, AttributeModel):
        thresholds = getattr(source, "thresholds", None)
        return Checkpoint(
            state_dict=source.state_dict(),
            config=source.config,
            thresholds=None if thresholds is None else [float(t) for t in thresholds],
        )
    return load_checkpoint(source)


def checkpoint_in_folder(folder: Path, label: str) -> Path:
    """The checkpoint file of a model folder, after checking that the folder is pedattr's and
    that its ``config.json`` describes the checkpoint's model.

    Raises:
        CheckpointError: one line naming ``label`` (or the file) and the problem.
    """
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        if (folder / "best.safetensors").is_file():
            raise CheckpointError(
                f"{label}: a training run folder, not a model folder; give "
                f"{folder / 'best.safetensors'}"
            )
        raise CheckpointError(
            f"{label}: not a pedattr model folder: no {CONFIG_FILE} (pedattr.save_pretrained "
            f"writes {CHECKPOINT_FILE}, {CONFIG_FILE} and {CARD_FILE})"
        )
    config = read_folder_config(config_path, label)
    name = config.get("checkpoint", CHECKPOINT_FILE)
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{label}: {CONFIG_FILE} names {name}, which is not in the folder")
    meta = read_metadata(path)
    stored = ModelConfig.from_dict(meta["model"])
    declared = ModelConfig.from_dict(config["model"])
    if declared != stored:
        different = sorted(
            key for key, value in declared.to_dict().items() if stored.to_dict()[key] != value
        )
        raise CheckpointError(
            f"{config_path}: its model differs from {name}'s in {', '.join(different)}; the "
            "folder was edited by hand or mixed from two models"
        )
    return path


def read_folder_config(path: Path, label: str) -> dict[str, Any]:
    """A model folder's ``config.json``, refused in one line when it is not pedattr's."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply") from None
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY_NAME:
        raise CheckpointError(
            f"{label}: not a pedattr model folder: {CONFIG_FILE} is {_foreign(config)}"
        )
    name = config.get("checkpoint", CHECKPOINT_FILE)
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise CheckpointError(f"{path}: 'checkpoint' must be a file name, found {name!r:.80}")
    try:
        validate_metadata({"model": config.get("model")})
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    return config


def _foreign(config: Any) -> str:
    """What a foreign ``config.json`` seems to be, for the refusal."""
    if not isinstance(config, dict):
        return "not a JSON object"
    for key in ("library_name", "model_type", "architecture", "architectures"):
        if key in config:
            return f"another library's ({key} {json.dumps(config[key])[:60]})"
    return 'not pedattr\'s (no "library_name": "pedattr")'


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"the Hugging Face Hub needs huggingface_hub: {_INSTALL}") from None
    return huggingface_hub


def hub_checkpoint(repo_id: str, revision: str | None, label: str) -> Path:
    """The checkpoint of Hub repository ``repo_id`` at ``revision``, fetched into
    huggingface_hub's cache (only read from it when ``HF_HUB_OFFLINE`` is set): ``config.json``
    first, so that a foreign repository is refused before any weights are downloaded.

    Raises:
        CheckpointError: huggingface_hub is missing, or the repository, revision or files
            cannot be had; or the repository is not a pedattr model.
    """
    try:
        hf = _hub()
    except ImportError as err:
        raise CheckpointError(f"{label}: no such local file or folder; {err}") from None
    options = dict(revision=revision, library_name=LIBRARY_NAME, library_version=__version__)
    try:
        config_path = Path(hf.hf_hub_download(repo_id, CONFIG_FILE, **options))
        name = read_folder_config(config_path, label).get("checkpoint", CHECKPOINT_FILE)
        hf.hf_hub_download(repo_id, name, **options)
    except CheckpointError:
        raise
    except Exception as err:  # huggingface_hub's errors, network errors, a bad id
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{label}: no such local file or folder, and the Hugging Face Hub repository "
            f"could not be had ({reason})"
        ) from err
    return checkpoint_in_folder(config_path.parent, label)


def push_to_hub(
    source: AttributeModel | Checkpoint | str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    license: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Write ``source`` in the hub layout (:func:`save_pretrained`) and upload it to the Hugging
    Face Hub repository ``repo_id``, created if needed (``private`` then) and, with
    ``revision``, to that branch, created from the main branch if needed. The token is
    huggingface_hub's own (``HF_TOKEN`` or ``hf auth login``).

    Returns:
        The URL of the commit.

    Raises:
        CheckpointError: ``source`` is not a usable checkpoint.
        ValueError: the Hub refused the request (no token, no permission, a bad id).
        RunFailed: the Hub could not be reached or failed.
    """
    checkpoint = _as_checkpoint(source)  # a bad checkpoint fails before the network is touched
    hf = _hub()
    api = hf.HfApi()
    with tempfile.TemporaryDirectory(prefix="pedattr-push-") as folder:
        save_pretrained(checkpoint, folder, repo_id=repo_id, license=license)
        try:
            api.create_repo(repo_id, private=private or None, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message or f"pedattr {__version__}: {CHECKPOINT_FILE}",
            )
        except Exception as err:
            raise _push_error(err, repo_id) from err
    return str(getattr(commit, "commit_url", commit))


def _push_error(err: Exception, repo_id: str) -> Exception:
    """A Hub refusal (4xx, no token, a bad id) is the user's input; anything else a failure."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    status = getattr(getattr(err, "response", None), "status_code", None)
    names = {cls.__name__ for cls in type(err).__mro__}
    refused = (isinstance(status, int) and 400 <= status < 500) or bool(
        names & {"LocalTokenNotFoundError", "HFValidationError", "RepositoryNotFoundError"}
    )
    message = f"{repo_id}: the Hugging Face Hub {'refused' if refused else 'failed'}: {reason}"
    return ValueError(message) if refused else RunFailed(message)
