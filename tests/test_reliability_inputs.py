"""Reliability bad inputs (tests/cases_reliability.py): each ends with exit code 2 and EXACTLY one stderr line,
``fedcl: error: ...``, never torch's advice to unpickle, and never a results.json."""

from __future__ import annotations

import pytest

from fedcl.cli import main
from tests.cases_reliability import ONE_LINE_ONLY, RELIABILITY_CASES


def _one_line(argv: list[str], tmp_path, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedcl: error:"), err[-2000:]
    assert "weights_only" not in err
    assert not (tmp_path / "out" / "results.json").exists()
    return lines[0]


def test_cases_are_distinct():
    assert len({name for name, *_ in RELIABILITY_CASES + ONE_LINE_ONLY}) == len(RELIABILITY_CASES) + len(ONE_LINE_ONLY)


@pytest.mark.parametrize("name, build, message", RELIABILITY_CASES, ids=[c[0] for c in RELIABILITY_CASES])
def test_bad_input_gives_exactly_one_line(name, build, message, tmp_path, capsys):
    line = _one_line(build(tmp_path), tmp_path, capsys)
    assert message in line, line


@pytest.mark.parametrize("name, build", ONE_LINE_ONLY, ids=[c[0] for c in ONE_LINE_ONLY])
def test_bad_value_gives_exactly_one_line(name, build, tmp_path, capsys):
    _one_line(build(tmp_path), tmp_path, capsys)
