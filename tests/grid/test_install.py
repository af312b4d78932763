"""`sparta grid` without CityLearn: one line naming the install command, exit status 2 (runs everywhere)."""

import sys

import pytest

from sparta.cli import main
from sparta.grid.env import INSTALL


@pytest.mark.parametrize("argv", [["grid"], ["grid", "train", "--agent", "rbc", "--episode-days", "2"],
                                  ["grid", "eval", "nowhere"]])
@pytest.mark.parametrize("missing", ["citylearn", "pettingzoo"])
def test_grid_without_citylearn_names_the_install_command(argv, missing, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, missing, None)  # `import citylearn` (or pettingzoo) raises ImportError
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparta: error: sparta grid needs")
    assert lines[0].endswith(INSTALL) and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()


def test_install_command_is_pinned_and_without_deps():
    assert "pip install --no-deps citylearn==3.0.2" in INSTALL and "pettingzoo" in INSTALL
