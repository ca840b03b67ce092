"""Each model option is declared once, in ModelConfig, and every consumer follows from it:
ModelConfig's own checks, the config's ``model:`` section and ``model.KEY=VALUE`` overrides,
``pedattr summary``'s options and the check of a checkpoint's metadata."""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import pytest

from pedattr.checkpoint.format import FORMAT_NAME, validate_metadata
from pedattr.cli import main
from pedattr.engine import config as config_module
from pedattr.engine.config import (
    ConfigError,
    ModelSection,
    TrainConfig,
    apply_overrides,
    check_values,
    model_options,
    model_section,
)
from pedattr.models.config import (
    ModelConfig,
    option,
    option_help,
    option_problem,
    option_types,
    option_usage,
)

ROOT = Path(__file__).resolve().parents[2]
#: Options a config sets; the attribute names come from the dataset.
OPTIONS = [f for f in fields(ModelConfig) if f.name != "attribute_names"]


def _other_value(name: str, default: Any) -> Any:
    """A valid value of option ``name`` that is not its default."""
    hint = option_types()[name]
    if typing.get_origin(hint) is Literal:
        return next(choice for choice in typing.get_args(hint) if choice != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default // 2
    if isinstance(default, str):
        return "timm:test_efficientnet"
    return [side // 2 for side in default]


def _bad_value(name: str, default: Any) -> Any:
    """A value that option ``name`` refuses: out of its choices or range, or for booleans and
    free strings (which have no such value) a number."""
    hint = option_types()[name]
    if typing.get_origin(hint) is Literal:
        return "no-such-choice"
    if isinstance(default, bool | str):
        return 5
    if isinstance(default, int):
        return 10**6
    return [0, default[1]]


@pytest.mark.parametrize("item", OPTIONS, ids=lambda item: item.name)
def test_every_option_is_a_setting_a_summary_option_and_checked_in_checkpoints(item):
    name, default = item.name, item.default
    assert option_help(name), f"{name} has no help"
    value = _other_value(name, default)
    override = f"model.{name}={json.dumps(value)}"

    # the model: section takes it, and summary's options carry it to ModelConfig
    config = TrainConfig()
    apply_overrides(config, [override])
    options = model_options([override])
    assert options[name] == (tuple(value) if isinstance(value, list) else value)
    built = ModelConfig(attribute_names=("a",), **options)
    assert getattr(built, name) == options[name]
    assert getattr(config.model, name) == options[name]

    # a checkpoint with it validates; with a refused value it is named, as ModelConfig words it
    meta = {"format": FORMAT_NAME, "format_version": 1, "model": built.to_dict()}
    assert validate_metadata(json.loads(json.dumps(meta))) == built
    bad = _bad_value(name, default)
    problem = option_problem(name, bad)
    assert problem and problem.startswith("must be")
    with pytest.raises(ValueError, match=re.escape(f"model.{name} {problem}")):
        validate_metadata({**meta, "model": {**meta["model"], name: bad}})
    with pytest.raises(ValueError, match=re.escape(f"{name} {problem}")):
        ModelConfig(attribute_names=("a",), **{**options, name: bad})
    with pytest.raises(ConfigError, match=re.escape(f"'model.{name}={json.dumps(bad)}'")):
        model_options([f"model.{name}={json.dumps(bad)}"])


def test_summary_help_lists_every_option_with_its_values_and_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["summary", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for item in OPTIONS:
        assert f"  model.{item.name}=" in text and option_help(item.name) in text, item.name
    assert "model.head=alm|gap|attention|parts (default alm)" in text
    assert "model.pyramid_dim=1..8192 (default 256)" in text


def test_model_section_is_model_config_without_names_plus_pretrained():
    section = {f.name: f for f in fields(ModelSection)}
    assert list(section) == ["arch", "backbone", "pretrained", *[f.name for f in OPTIONS[2:]]]
    hints = typing.get_type_hints(ModelSection)
    for item in OPTIONS:
        assert section[item.name].default == item.default
        assert hints[item.name] == option_types()[item.name]


@dataclass(frozen=True)
class _Extended(ModelConfig):
    """ModelConfig with two options more, declared the one way options are."""

    extra_dim: int = option(4, "an extra size", low=1, high=8)
    extra_mode: Literal["up", "down"] = option("up", "an extra direction")


def test_a_new_option_needs_no_other_declaration(monkeypatch):
    section = model_section(_Extended)
    names = {f.name for f in fields(section)}
    assert {"extra_dim", "extra_mode", "pretrained"} <= names and "attribute_names" not in names

    # its own checks, and the help of the commands that take model settings
    assert "  model.extra_dim=1..8 (default 4)\n      an extra size" in option_usage(_Extended)
    with pytest.raises(ValueError, match=r"^extra_dim must be a whole number from 1 to 8, got 9"):
        _Extended(attribute_names=("a",), extra_dim=9)
    with pytest.raises(ValueError, match=r"^extra_mode must be one of \['up', 'down'\]"):
        _Extended(attribute_names=("a",), extra_mode="maybe")

    # the YAML section and its overrides: types, choices and range, blamed on the override
    monkeypatch.setitem(config_module.SECTIONS, "model", section)
    config = TrainConfig(model=section())
    apply_overrides(config, ["model.extra_dim=6", "model.extra_mode=down"])
    assert (config.model.extra_dim, config.model.extra_mode) == (6, "down")
    with pytest.raises(ConfigError, match="model.extra_mode: expected one of 'up', 'down'"):
        apply_overrides(config, ["model.extra_mode=maybe"])
    apply_overrides(config, ["model.extra_dim=9"])
    with pytest.raises(
        ConfigError, match=r"^override 'model.extra_dim=9': model.extra_dim: must be a whole "
    ):
        check_values(config, "x.yaml", ["model.extra_dim=9"])


def test_ranges_are_the_checkpoint_caps_in_config_files(tmp_path):
    """A config cannot ask for a model whose checkpoint would be refused on loading."""
    for override, words in (
        ("model.pyramid_dim=9000", "model.pyramid_dim: must be a whole number from 1 to 8192"),
        ("model.input_size=[0, 64]", "model.input_size: must be [height, width], whole numbers"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"override '{override}': {words}")):
            model_options([override])


def test_the_docs_options_table_follows_the_declaration():
    """docs/model.md lists every option but the four that describe any model, with its default."""
    text = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    table = text.split("## Options", 1)[1].split("\n\n", 2)[1]
    rows = {
        cells[0].strip("` "): cells[1]
        for line in table.splitlines()[2:]
        for cells in [line.strip("|").split("|")]
    }
    described = {"arch", "backbone", "attribute_names", "input_size"}
    assert set(rows) == {f.name for f in fields(ModelConfig)} - described
    for item in fields(ModelConfig):
        if item.name in rows:
            shown = str(item.default) if not isinstance(item.default, str) else f"`{item.default}`"
            assert shown in rows[item.name], item.name
