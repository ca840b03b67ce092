"""Write the JSON that `pedattr train`, `eval --json` and `predict --json` produce on a tiny run.

The files beside this script were written by it before the package was reorganised; the test
beside it runs it again and requires the same output, so that a change meant to leave
behaviour alone does. Paths are replaced by placeholders relative to the run's folder.

    python -m tests.golden.produce OUT_DIR   # writes OUT_DIR/{report.json,eval.json,predict.jsonl}
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_prepared_dataset, tiny_config

GOLDEN = Path(__file__).resolve().parent
FILES = ("report.json", "eval.json", "predict.jsonl")


def _pedattr(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pedattr", *args], check=True, capture_output=True)


def produce(work: Path) -> dict[str, str]:
    """Train, evaluate and predict in ``work``; the three outputs, paths made relative."""
    data = make_prepared_dataset(work)
    config = tiny_config(work, data, optim={"lr": 3e-3, "epochs": 4, "lr_step": 3})
    _pedattr("train", "--config", str(config))
    run = work / "run"
    best = str(run / "best.safetensors")
    _pedattr(
        "eval",
        "--checkpoint",
        best,
        "--data",
        str(data),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--json",
        str(work / "eval.json"),
    )
    images = sorted((work / "images").glob("*.png"))[-4:]
    _pedattr(
        "predict",
        "--checkpoint",
        best,
        "--device",
        "cpu",
        "--json",
        str(work / "predict.jsonl"),
        *map(str, images),
    )
    texts = {
        "report.json": (run / "report.json").read_text(),
        "eval.json": (work / "eval.json").read_text(),
        "predict.jsonl": (work / "predict.jsonl").read_text(),
    }
    return {name: text.replace(str(work), "WORK") for name, text in texts.items()}


def load_lines(text: str) -> list:
    """The JSON values in ``text``: one document, or one per line."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


if __name__ == "__main__":
    out = Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name, text in produce(out / "work").items():
        (out / name).write_text(text)
