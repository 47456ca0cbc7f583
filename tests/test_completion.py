"""`slmforge completion bash|zsh`: a script naming every command, that the shell accepts and completes with."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from slmforge.cli import COMMANDS, main


def _script(shell: str, capsys) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_bash_completion_completes_commands_actions_and_options(capsys, tmp_path):
    script = _script("bash", capsys)
    first_words = next(line for line in script.splitlines() if "--version" in line).split("'")[1].split()
    assert set(COMMANDS) <= set(first_words)  # every command completes as the first word
    path = tmp_path / "slmforge.bash"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    probe = (f"source {path}\n"
             't() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _slmforge; echo "${COMPREPLY[*]}"; }\n'
             "t slmforge ru; t slmforge cache ''; t slmforge run --pl; t slmforge register --format ''\n")
    lines = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == ["run", "ls clean", "--plain", "custom_model mlflow_model"]


def test_zsh_completion_is_a_valid_script(capsys, tmp_path):
    script = _script("zsh", capsys)
    assert script.startswith("#compdef slmforge") and all(f"'{name}:" in script for name in COMMANDS)
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: its syntax check needs it")
    path = tmp_path / "_slmforge"
    path.write_text(script)
    assert subprocess.run(["zsh", "-n", str(path)]).returncode == 0


def test_an_unknown_shell_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["completion", "fish"])
    assert e.value.code == 2 and "invalid choice: 'fish'" in capsys.readouterr().err
