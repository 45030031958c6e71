"""Pipeline files: validation errors name the file and key; overrides; the reference doc."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.core.errors import ConfigError
from medseg.pipeline.config import (
    PipelineConfig,
    load_config,
    parse_override,
    reference_markdown,
    to_yaml,
)
from medseg.pipeline.schema import reference_rows
from medseg.train.settings import DEFAULT_CONFIGURATION, DEFAULT_FOLD

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def write(tmp_path: Path):
    (tmp_path / "data").mkdir()

    def make(text: str) -> Path:
        path = tmp_path / "pipe.yaml"
        path.write_text(text)
        return path

    return make


def test_minimal_file_gets_defaults_and_relative_paths(write, tmp_path):
    cfg = load_config(write("name: x\ndataset:\n  path: data\n"))
    assert cfg.dataset.path == (tmp_path / "data").resolve()
    assert cfg.train.configuration == DEFAULT_CONFIGURATION == "auto"  # medseg.train.settings
    assert cfg.train.folds == (DEFAULT_FOLD,)  # medseg.train.settings: fold 0, or all when tiny
    assert cfg.predict.inputs == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ndataset: {path: data, holdout_fracton: 0.1}\n",
         "'dataset.holdout_fracton': unknown key (did you mean 'holdout_fraction'?)"),
        ("name: x\ndataset: {path: data}\ntrainn: {}\n",
         "'trainn': unknown key (did you mean 'train'?)"),
        ("name: x\ndataset: {path: missing}\n", "'dataset.path': path does not exist"),
        ("name: x\n", "'dataset': required key is missing"),
        ("name: x\ndataset: {}\n", "'dataset.path': required key is missing"),
        ("name: x\ndataset: {path: data}\ntrain: {epochs: ten}\n",
         "'train.epochs': expected an integer, got 'ten'"),
        ("name: x\ndataset: {path: data}\ntrain: {configuration: 4d}\n",
         "'train.configuration': expected one of 'auto', '3d', '2d', got '4d'"),
        ("name: x\ndataset: {path: data}\ntrain: {folds: [0, some]}\n",
         "'train.folds[1]': expected int | 'all' | 'auto', got 'some'"),
        ("name: x\ndataset: {path: data}\ntrain: {max_minutes: -1}\n",
         "'train.max_minutes': must be positive"),
        ("name: x\ndataset: {path: data, strict: 1}\n",
         "'dataset.strict': expected true or false"),
        ("name: x\ndataset: {path: data}\npredict: {inputs: [nope.nii.gz]}\n",
         "'predict.inputs[0]': path does not exist"),
        ("name: x\ndataset: [data]\n", "'dataset': expected a mapping"),
        ("- just\n- a list\n", "expected a mapping of sections"),
        ("name: [x\n", "not valid YAML"),
    ],
)
def test_bad_files_name_file_and_key(write, text, message):
    path = write(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


def test_missing_file():
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_config("/nonexistent/pipe.yaml")


def test_overrides_are_yaml_and_validated(write, tmp_path, monkeypatch):
    path = write("name: x\ndataset: {path: data}\n")
    cfg = load_config(path, ["train.max_minutes=2", "train.folds=[0, 1]", "predict.tta=true"])
    assert cfg.train.max_minutes == 2.0
    assert cfg.train.folds == (0, 1)
    assert cfg.predict.tta is True
    with pytest.raises(ConfigError, match=r"^--set: 'train.epochs': expected an integer"):
        load_config(path, ["train.epochs=1.5"])
    with pytest.raises(ConfigError, match=r"key 'train\.max_minute' .*'train\.max_minutes'"):
        load_config(path, ["train.max_minute=3"])
    with pytest.raises(ConfigError, match=r"expects section\.key=value"):
        load_config(path, ["train.max_minutes"])


def test_override_paths_resolve_against_cwd(write, tmp_path, monkeypatch):
    path = write("name: x\ndataset: {path: data}\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "other").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, ["dataset.path=other"])
    assert cfg.dataset.path == (elsewhere / "other").resolve()


def test_parse_override_value_types():
    assert parse_override("a.b=null") == (["a", "b"], None)
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


def test_resolved_yaml_round_trips(write, tmp_path):
    cfg = load_config(write("name: x\ndataset: {path: data}\ntrain: {folds: [all]}\n"))
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(to_yaml(cfg))
    again = load_config(resolved)
    assert again.medseg_version is not None
    assert again.train == cfg.train and again.dataset == cfg.dataset
    assert yaml.safe_load(resolved.read_text())["dataset"]["path"] == str(cfg.dataset.path)


def test_every_key_is_documented():
    for key, _, _, meaning in reference_rows(PipelineConfig):
        assert meaning, f"{key} has no documentation"


def test_reference_doc_is_up_to_date():
    doc = ROOT / "docs" / "pipeline-reference.md"
    assert doc.read_text() == reference_markdown(), (
        "docs/pipeline-reference.md is stale: python -m medseg.pipeline.reference "
        "> docs/pipeline-reference.md"
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml")))
def test_shipped_pipelines_parse(name):
    path = ROOT / "pipelines" / name
    raw = yaml.safe_load(path.read_text())
    if not Path(path.parent, raw["dataset"]["path"]).exists():
        pytest.skip(f"dataset of {name} not present")
    assert load_config(path).name == path.stem
