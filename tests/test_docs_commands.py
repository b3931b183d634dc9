"""The commands the README and docs/ show are commands that run.

Every `python train.py ...` and `lossheads-train ...` in README.md and docs/*.md is composed with the
real configs, in-process, so that a renamed group, option or key breaks the build instead of the
reader's first try. A sweep (`-m`, `a,b`, `range(1,11)`) is composed at the first value of each swept
key. Only composition is checked: files the examples name (`data.path=customers.csv`,
`ckpt_path=outputs/DATE/TIME`) need not exist. The quick-start command and the README's own loss
example run for real.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import ROOT, compose_config

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRY_POINTS = ("python train.py", "lossheads-train")
NOT_A_RUN = ("--help", "-h", "-sc", "--shell-completion", "--cfg", "--info")


def commands_in(document: Path) -> list[tuple[str, str]]:
    """(where, command) for each train command in the document's bash blocks and inline code."""
    found: list[tuple[str, str]] = []
    in_bash = False
    for number, line in enumerate(document.read_text().splitlines(), start=1):
        where = f"{document.relative_to(ROOT)}:{number}"
        if line.startswith("```"):
            in_bash = not in_bash and line.strip() in ("```bash", "```sh", "```shell")
            continue
        spans = [line] if in_bash else re.findall(r"`([^`]+)`", line)
        for span in spans:
            for part in span.split("&&"):
                command = strip_comment(part).strip()
                command = re.sub(r"^(\w+=\S*\s+)+", "", command)  # PYTHONPATH=. python train.py ...
                if command.startswith(ENTRY_POINTS):
                    found.append((where, command))
    return found


def strip_comment(line: str) -> str:
    """The command without its trailing `# comment` (a `#` after whitespace, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def first_values(arguments: list[str]) -> list[str]:
    """The overrides of the sweep's first job: each swept key at its first value, as Hydra would run it."""
    overrides = []
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            overrides.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            overrides.append(f"{key}={override.get_value_element_as_str()}")
    return overrides


def readme_loss_example() -> tuple[str, str, str]:
    """The README's "Add a loss": (name, the class's module, the config file), as printed."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n# src/lossheads/losses/(\w+)\.py\n(.*?)```", readme, re.S)
    config = re.search(r"```yaml\n# configs/loss/(\w+)\.yaml\n(.*?)```", readme, re.S)
    assert code and config and code.group(1) == config.group(1), "README.md: Add a loss shows a class and its config"
    return code.group(1), code.group(2), config.group(2)


def with_example_loss(arguments: list[str], folder: Path) -> list[str]:
    """The README's example loss is not shipped: a command that uses it finds its config in `folder`."""
    name, _, config = readme_loss_example()
    if f"loss={name}" not in arguments:
        return arguments
    (folder / "loss").mkdir(parents=True, exist_ok=True)
    (folder / "loss" / f"{name}.yaml").write_text(config)
    return [*arguments, f"hydra.searchpath=[file://{folder}]"]


COMMANDS = [(where, command) for document in DOCUMENTS for where, command in commands_in(document)]


def words_of(command: str) -> list[str]:
    """The arguments after `python train.py` or `lossheads-train`."""
    return shlex.split(command)[2 if command.startswith("python") else 1 :]


RUNS = [(where, command) for where, command in COMMANDS if not set(words_of(command)) & set(NOT_A_RUN)]
HELP = [(where, command) for where, command in COMMANDS if set(words_of(command)) & {"--help", "-h"}]


def test_the_docs_show_train_commands():
    """The extraction itself: a README without commands would make the test below pass on nothing."""
    readme = [command for where, command in COMMANDS if where.startswith("README.md")]
    assert "python train.py" in readme and len(readme) >= 10
    assert any(where.startswith("docs/") for where, _ in COMMANDS)


@pytest.mark.parametrize(("where", "command"), RUNS, ids=[where for where, _ in RUNS])
def test_every_documented_command_composes(where, command, tmp_path):
    arguments = [word for word in words_of(command) if word not in ("-m", "--multirun")]
    cfg = compose_config(with_example_loss(first_values(arguments), tmp_path / "configs"), tmp_path / "run")
    assert cfg.loss.name and cfg.data._target_


@pytest.mark.parametrize(("where", "command"), HELP, ids=[where for where, _ in HELP])
def test_every_documented_help_command_prints_the_help_page(where, command, monkeypatch, capsys):
    """`--help` runs no config: the page it prints, read from the configs, lists the groups and keys."""
    from lossheads.cli.train import train

    monkeypatch.setattr("sys.argv", ["train.py", *words_of(command)])
    train()
    page = capsys.readouterr().out
    assert page.startswith("usage: lossheads-train") and "config groups (default marked *):" in page
    assert "  loss            " in page and "top-level keys (default):" in page


def test_readme_setup_commands_are_the_quick_start_and_what_ci_runs():
    """The README's two set-up lines: the install plus the default job, and the test command CI runs."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up\n+```bash\n(.*?)```", readme, re.S).group(1)
    install, tests = [strip_comment(line).strip() for line in block.strip().splitlines()]
    assert install == "bash scripts/install.sh && python train.py"
    assert tests.startswith("python -m pytest") and tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_quick_start_command_trains_and_writes_its_run_folder(default_train_py):
    """`python train.py`, as the README's set-up runs it (the shared run: two epochs, in a fresh folder)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up\n+```bash\n(.*?)```", readme, re.S).group(1)
    quick_start = strip_comment(block.splitlines()[0]).split("&&")[1].split()[2:]  # after `python train.py`
    assert quick_start == []  # the default job, which `default_train_py` runs
    result, folder = default_train_py
    lines = result.stdout.splitlines()
    assert lines[0].startswith("data=breast_cancer  head=auto  loss=auto  model=mlp")
    assert lines[-1] == "results in run"
    record = json.loads((folder / "metrics.json").read_text())
    assert record["status"] == "ok" and record["epochs"] == 2 and 0.5 < record["test/acc"] <= 1
    assert (folder / "checkpoints" / "last.ckpt").is_file()


def test_the_readme_loss_example_trains(train, tmp_path):
    """The README's "Add a loss": its class and its config file, as printed, give a loss that trains."""
    from lossheads.losses import LOSSES

    name, code, _ = readme_loss_example()
    module = types.ModuleType(f"readme_loss_{name}")
    try:
        exec(compile(code, f"README.md:{name}.py", "exec"), module.__dict__)  # registers the loss
        sys.modules[module.__name__] = module
        assert name in LOSSES
        shown = next(command for where, command in COMMANDS if f"loss={name}" in command.split())
        overrides = shlex.split(shown)[2:]  # the README's own command for it, after `python train.py`
        record = train(*with_example_loss(overrides, tmp_path / "configs"))
        assert record["status"] == "ok" and record["loss"] == name and record["test/acc"] > 0.5
    finally:
        LOSSES.pop(name, None)
        sys.modules.pop(module.__name__, None)
