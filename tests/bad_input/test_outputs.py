"""Outputs that cannot be written: a full disk, a file where a folder belongs, a failing
temporary file. One line naming the real output, the documented exit status, earlier files
intact and no temporary file left behind."""

from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import pedattr
import pedattr.engine.training
from pedattr.cli import main
from pedattr.data.annotations import RawAnnotations
from pedattr.data.description import write_description
from pedattr.engine.config import TrainConfig
from pedattr.engine.training import Progress, save_state
from pedattr.inference.command import run_predict
from pedattr.utils.io import OutputError, append_text, atomic_write_text, make_folder
from tests.helpers import LEARNABLE_ATTRIBUTES, TINY_MODEL, make_prepared_dataset

ENOSPC = os.strerror(errno.ENOSPC)


class _FullFile:
    """A file opened for writing on a full disk: every write fails with ENOSPC."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, ENOSPC)

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder, name_part="")``: from now on, writing a file in ``folder`` (whose
    name contains ``name_part``) fails as on a full disk, whoever opens it (pathlib, onnx,
    Pillow, plain ``open``)."""
    real_open = io.open

    def arm(folder: Path, name_part: str = "") -> None:
        def fake_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            writing = any(flag in mode for flag in "wax+")
            if isinstance(file, str | os.PathLike) and writing:
                path = Path(os.fspath(file))
                if path.parent == folder and name_part in path.name:
                    return _FullFile(handle)
            return handle

        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(builtins, "open", fake_open)

    return arm


def _tiny_model():
    return pedattr.build_model("alm", attribute_names=list(LEARNABLE_ATTRIBUTES), **TINY_MODEL)


def _assert_refused(caught: pytest.ExceptionInfo, output: Path) -> None:
    """The error names ``output`` (not its temporary file), and no temporary file is left."""
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"{output}: cannot write ({ENOSPC})"
    assert ".tmp" not in str(caught.value)
    assert not [p.name for p in output.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_keeps_the_earlier_checkpoint(tmp_path: Path, full_disk) -> None:
    path = tmp_path / "best.safetensors"
    pedattr.save_checkpoint(path, _tiny_model())
    before = path.read_bytes()
    full_disk(tmp_path)
    with pytest.raises(OutputError) as caught:
        pedattr.save_checkpoint(path, _tiny_model())
    _assert_refused(caught, path)
    assert path.read_bytes() == before


def test_a_full_disk_keeps_the_earlier_training_state(tmp_path: Path, full_disk) -> None:
    model = _tiny_model()
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path / "state.safetensors"
    save_state(path, model, optimizer, None, Progress(), TrainConfig())
    before = path.read_bytes()
    full_disk(tmp_path)
    with pytest.raises(OutputError) as caught:
        save_state(path, model, optimizer, None, Progress(epoch=1), TrainConfig())
    _assert_refused(caught, path)
    assert path.read_bytes() == before


@pytest.mark.slow
def test_a_full_disk_keeps_the_earlier_onnx_file(tmp_path: Path, full_disk) -> None:
    from pedattr.inference.export import export_onnx

    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier")
    full_disk(tmp_path)
    with pytest.raises(OutputError) as caught:
        export_onnx(_tiny_model(), path, check=False)
    _assert_refused(caught, path)
    assert path.read_bytes() == b"earlier"


def test_a_full_disk_keeps_the_earlier_json(tmp_path: Path, full_disk) -> None:
    path = tmp_path / "report.json"
    path.write_text("{}")
    full_disk(tmp_path)
    with pytest.raises(OutputError) as caught:
        atomic_write_text(path, '{"mA": 1}')
    _assert_refused(caught, path)
    assert path.read_text() == "{}"


@pytest.mark.parametrize("failing", ["samples.csv", "dataset.json"])
def test_a_full_disk_keeps_the_whole_earlier_prepared_dataset(
    tmp_path: Path, full_disk, failing: str
) -> None:
    """All of a prepared folder's files are replaced or none: never a new samples.csv beside an
    old dataset.json."""
    data = make_prepared_dataset(tmp_path, {"train": 2, "val": 2, "test": 2})
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    raw = RawAnnotations(
        attribute_names=["A"],
        image_names=["x.png"],
        labels=torch.ones(1, 1, dtype=torch.uint8).numpy(),
        splits=["train"],
        image_root=tmp_path,
    )
    full_disk(data, failing)
    with pytest.raises(OutputError) as caught:
        write_description(raw, data)
    _assert_refused(caught, data / failing)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


@pytest.mark.slow
def test_a_full_disk_stops_predict_and_keeps_the_earlier_json_lines(
    tmp_path: Path, full_disk
) -> None:
    checkpoint = tmp_path / "m.safetensors"
    pedattr.save_checkpoint(checkpoint, _tiny_model())
    make_prepared_dataset(tmp_path, {"test": 2})
    image = next((tmp_path / "images").iterdir())
    out = tmp_path / "out"
    out.mkdir()
    lines = out / "predictions.jsonl"
    lines.write_text("earlier\n")
    full_disk(out)
    with pytest.raises(OutputError) as caught:
        run_predict(checkpoint, [str(image)], json_path=lines, device="cpu", out=io.StringIO())
    _assert_refused(caught, lines)
    assert lines.read_text() == "earlier\n"


def test_a_full_disk_while_appending_to_the_log_names_it(tmp_path: Path, full_disk) -> None:
    log = tmp_path / "log.jsonl"
    append_text(log, "{}\n")
    full_disk(tmp_path)
    with pytest.raises(OutputError) as caught:
        append_text(log, '{"epoch": 2}\n')
    _assert_refused(caught, log)
    assert log.read_text() == "{}\n"


def test_a_failing_temporary_file_is_named_by_its_output(tmp_path: Path, monkeypatch) -> None:
    """mkstemp's own error names the hidden temporary file; the user never asked for that."""

    def refuse(prefix: str, suffix: str, dir: str) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    path = tmp_path / "report.json"
    with pytest.raises(OutputError) as caught:
        atomic_write_text(path, "{}")
    assert str(caught.value) == f"{path}: cannot write (Permission denied)"
    assert caught.value.errno == errno.EACCES


def test_a_file_where_a_folder_belongs_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for folder in (blocker, blocker / "sub" / "deeper"):
        with pytest.raises(OutputError, match=f"^{blocker}: exists and is not a folder$"):
            make_folder(folder)
    with pytest.raises(OutputError, match=f"^{blocker}: exists and is not a folder$"):
        atomic_write_text(blocker / "report.json", "{}")


def test_writing_over_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "report.json").mkdir()
    with pytest.raises(OutputError, match="report.json: is a folder, not a file to write$"):
        atomic_write_text(tmp_path / "report.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# --- through the command line -------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_exit_1(tmp_path: Path, full_disk, capsys) -> None:
    """eval --json on a full disk: the run failed after its input was accepted."""
    data = make_prepared_dataset(tmp_path, {"train": 2, "val": 2, "test": 2})
    checkpoint = tmp_path / "m.safetensors"
    pedattr.save_checkpoint(checkpoint, _tiny_model())
    out = tmp_path / "out"
    out.mkdir()
    report = out / "report.json"
    report.write_text("{}")
    full_disk(out)
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--workers", "0"]
    assert main([*argv, "--device", "cpu", "--json", str(report)]) == 1
    err = capsys.readouterr().err  # after the progress bar
    assert err.endswith(f"\rpedattr eval: error: {report}: cannot write ({ENOSPC})\n")
    assert "Traceback" not in err
    assert report.read_text() == "{}"


def test_an_output_that_is_not_allowed_is_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    """A permission error on an output is a bad output path, as before: exit 2, one line."""

    def refuse(prefix: str, suffix: str, dir: str) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    report = tmp_path / "report.json"
    monkeypatch.setattr(
        pedattr.engine.training, "train", lambda *a, **k: atomic_write_text(report, "{}")
    )
    assert main(["train", "--config", "c.yaml"]) == 2
    expected = f"pedattr train: error: {report}: cannot write (Permission denied)\n"
    assert capsys.readouterr().err == expected


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    """run.out from an override (or the YAML file) is checked when the run starts."""
    data = make_prepared_dataset(tmp_path, {"train": 2, "val": 2, "test": 2})
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["train", "--config", str(config), "--data", str(data), f"run.out={blocker}/run"]
    assert main(argv) == 2
    assert (
        capsys.readouterr().err == f"pedattr train: error: {blocker}: exists and is not a folder\n"
    )
    assert blocker.read_text() == "x"


_LIMITED_RUN = """\
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
import pedattr
from pedattr.utils.io import OutputError
from pedattr.cli import main
try:
    pedattr.save_checkpoint({calibrated!r}, pedattr.load_model({checkpoint!r}))
except OutputError as err:
    print(f"library: {{err}}", file=sys.stderr)
sys.exit(main(["export", "--checkpoint", {checkpoint!r}, "--onnx", {onnx!r}, "--no-check"]))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="resource limits are POSIX")
def test_a_write_failing_in_the_os_is_one_line_for_checkpoints_and_onnx(tmp_path: Path) -> None:
    """Real write failures, not patched Python: files limited to half a checkpoint's size, so
    that writing the checkpoint (safetensors' format) and the ONNX file fails in the operating
    system (EFBIG), as on a full disk. Each names its output, the CLI exits 1, nothing else
    changes."""
    checkpoint = tmp_path / "m.safetensors"
    pedattr.save_checkpoint(checkpoint, _tiny_model())
    calibrated, onnx_path = tmp_path / "calibrated.safetensors", tmp_path / "m.onnx"
    calibrated.write_bytes(b"earlier")
    onnx_path.write_bytes(b"earlier")
    code = _LIMITED_RUN.format(
        limit=checkpoint.stat().st_size // 2,
        checkpoint=str(checkpoint),
        calibrated=str(calibrated),
        onnx=str(onnx_path),
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    too_large = os.strerror(errno.EFBIG)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"library: {calibrated}: cannot write ({too_large})\n"
        f"pedattr export: error: {onnx_path}: cannot write ({too_large})\n"
    )
    assert calibrated.read_bytes() == b"earlier" and onnx_path.read_bytes() == b"earlier"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
