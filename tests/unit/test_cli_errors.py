"""Only the project's own error types are user errors: one line and exit 2. Anything else, a
library's ValueError included, is a defect and keeps its traceback."""

import pytest

from data.errors import ConfigError
from launch import cli, cmd_generate


def test_a_project_error_is_one_line_and_exit_2(monkeypatch, capsys):
    def refuse(args):
        raise ConfigError("batch size must be at least 1")

    monkeypatch.setattr(cmd_generate, "_status", refuse)
    assert cli.main(["status"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "rankloop: error: batch size must be at least 1\n"


def test_a_defect_raising_a_plain_value_error_keeps_its_traceback(monkeypatch):
    def broken(args):
        return int("not a number")  # a bug, not the user's input

    monkeypatch.setattr(cmd_generate, "_status", broken)
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main(["status"])


def test_the_projects_error_types_are_config_errors():
    from data.export import ExportError
    from data.preferences import PreferenceSourceError
    from data.rankings import RankingError
    from data.simulate import SimulationError
    from policy.sft import SFTDataError
    from reward.score import ScorerSpecError

    for error in (ExportError, PreferenceSourceError, RankingError, SimulationError,
                  SFTDataError, ScorerSpecError):
        assert issubclass(error, ConfigError), error
