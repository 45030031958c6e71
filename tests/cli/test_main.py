"""The ``medseg`` entry point: sub-commands listed, one-line errors, documented exit codes."""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from pathlib import Path

import pytest

import medseg.cli.run as run_cli
from medseg.cli.main import build_parser, main
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK
from medseg.pipeline import run_pipeline
from medseg.pipeline.runner import Stage, StageContext, StageResult

COMMANDS = ["demo", "run", "info", "convert"]


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out or f"    {command}\n" in out, command
    assert out.index("    demo") < out.index("    run")


def test_no_command_prints_help(capsys):
    assert main([]) == EXIT_OK
    assert "usage: medseg" in capsys.readouterr().out


def test_run_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in ("--workdir", "--set", "--from", "--only"):
        assert option in out


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["run", str(missing)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == f"medseg: error: {missing}: pipeline file not found\n"


def test_invalid_config_names_key(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: x\ndataset: {path: data}\ntrain: {epoch: 3}\n")
    assert main(["run", str(pipe)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "'train.epoch': unknown key (did you mean 'epochs'?)" in err
    assert err.count("\n") == 1


def test_unknown_stage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "p.yaml", "--only", "trian"])
    assert exit_.value.code == 2


def _fake_stage(ctx: StageContext, behaviour: str) -> StageResult:
    if behaviour == "interrupt":
        raise KeyboardInterrupt
    if behaviour == "bug":
        raise RuntimeError("boom")
    (ctx.run_dir / "out.txt").write_text("ok")
    return StageResult(("out.txt",), "fake done")


@pytest.mark.parametrize(
    ("behaviour", "code", "message"),
    [
        ("ok", EXIT_OK, ""),
        ("bug", EXIT_INTERNAL, "medseg: internal error: RuntimeError: boom"),
        ("interrupt", EXIT_INTERRUPTED, "medseg: interrupted"),
    ],
)
def test_exit_codes(tmp_path, monkeypatch, capsys, behaviour, code, message):
    (tmp_path / "data").mkdir()
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: x\ndataset: {path: data}\n")
    fake = [Stage("fake", functools.partial(_fake_stage, behaviour=behaviour))]
    monkeypatch.setattr(run_cli, "run_pipeline",
                        functools.partial(run_pipeline, stage_list=fake))
    assert main(["run", str(pipe), "--workdir", str(tmp_path / "run")]) == code
    captured = capsys.readouterr()
    assert message in captured.err
    if code == EXIT_OK:
        assert "[fake] done" in captured.out
        assert f"run folder: {tmp_path / 'run'}" in captured.out


def test_debug_shows_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "medseg.cli.main", "--debug", "run", str(tmp_path / "no.yaml")],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2],
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_cli_doc_covers_every_command_and_option():
    doc = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    missing = []
    for name, sub in _subcommands().items():
        if f"## `medseg {name}" not in doc:
            missing.append(f"section for medseg {name}")
        flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
        missing += [f"medseg {name} {flag}" for flag in flags
                    if flag != "--help" and f"`{flag}" not in doc]
    assert not missing, "docs/cli.md lacks: " + ", ".join(missing)


def test_largest_component_defaults_to_what_validation_showed():
    parse = functools.partial(build_parser().parse_args)
    base = ["predict", "-m", "RUN", "-i", "IN", "-o", "OUT"]
    assert parse(base).largest_component is None  # the model's validation decides
    assert parse([*base, "--largest-component"]).largest_component is True
    assert parse([*base, "--no-largest-component"]).largest_component is False
