"""The README's examples against the code: every shell line names a command, options and files that
exist (parsed in-process by the command's own parser, so the README cannot drift from the CLI), and
every usage line and Python example names options and functions that exist. Also the commands'
``--help``: one line of help per option, with its default, and an example that parses."""

import argparse
import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

import protein_performer
from protein_performer.cli import build_parser
from protein_performer.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLACEHOLDERS = ("[", "]", "...", "…")  # usage syntax, which a shell would not run as pasted


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def shell_lines(block: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in (shlex.join(shlex.split(raw, comments=True)) for raw in joined.splitlines()) if line]


def readme_commands() -> list[str]:
    return [line for block in fenced_blocks(README.read_text(), "bash") for line in shell_lines(block)]


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every command and nested command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from subparsers(child, (*path, name))


def leaf_parsers() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return [(words, p) for words, p in subparsers(build_parser())
            if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


def command_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (possibly nested) command that ``words`` start with, and the rest of ``words``."""
    parser, rest = build_parser(), list(words)
    while rest:
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if choices is None or rest[0] not in choices:
            break
        parser = choices[rest.pop(0)]
    return parser, rest


def check_protein_performer(argv: list[str], line: str) -> None:
    assert not any(p in token for token in argv for p in PLACEHOLDERS), f"not runnable as pasted: {line}"
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0 and ({"--help", "-h", "--version"} & set(argv)), f"the CLI refuses README line: {line}"
    for token in argv:  # input files the README ships with must exist
        if re.match(r"^(examples|src|docs|benchmarks)/", token):
            assert (ROOT / token).exists(), f"{token} (README line: {line}) does not exist"


def check_script(script: str, options: list[str], line: str) -> None:
    path = ROOT / script
    assert path.is_file(), f"{script} (README line: {line}) does not exist"
    source = path.read_text()
    for option in (o.split("=")[0] for o in options if o.startswith("--")):
        assert re.search(rf"""add_argument\([^)]*["']{re.escape(option)}["']""", source), f"{script} has no option {option}: {line}"


def check_make(target: str, line: str) -> None:
    assert re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), flags=re.M), f"no make target {target}: {line}"


def check_shell_line(line: str) -> None:
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # environment assignments
        words.pop(0)
    head, rest = words[0], words[1:]
    if head in ("protein-performer", ".venv/bin/protein-performer"):
        check_protein_performer(rest, line)
    elif head == "torchrun":
        assert "-m" in rest and rest[rest.index("-m") + 1] == "protein_performer", line
        check_protein_performer(rest[rest.index("-m") + 2 :], line)
    elif head in ("python", "python3", ".venv/bin/python") and rest and rest[0].endswith(".py"):
        check_script(rest[0], rest[1:], line)
    elif head in ("python", "python3", ".venv/bin/python") and rest[:1] == ["-m"]:
        assert rest[1] == "protein_performer", line
        check_protein_performer(rest[2:], line)
    elif head == "make":
        for target in rest:
            check_make(target, line)
    elif head in ("source", "."):
        venv = re.search(r"^VENV\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
        assert rest == [f"{venv}/bin/activate"], f"the README activates {rest}, make creates {venv}: {line}"
    else:
        pytest.fail(f"README line with a command this test does not know: {line}")


COMMANDS = readme_commands()


def test_the_readme_says_to_activate_the_environment_before_the_first_protein_performer_command():
    lines = [line for block in fenced_blocks(README.read_text(), "bash") for line in shell_lines(block)]
    first = next(i for i, line in enumerate(lines) if "protein-performer" in line)
    assert any(line.startswith("source .venv/bin/activate") for line in lines[:first])


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_shell_line_runs_as_pasted(line):
    check_shell_line(line)


def test_the_walk_covers_every_command():
    named = set()
    for line in COMMANDS:
        words = [w for w in shlex.split(line) if not w.startswith("-")]
        for words_of, _ in leaf_parsers():
            if " ".join(words_of) in " ".join(words):
                named.add(words_of[0])
    assert named == {words[0] for words, _ in leaf_parsers()}


def usage_lines() -> list[str]:
    lines = []
    for block in fenced_blocks(README.read_text(), "text"):
        for line in re.sub(r"\n\s+(?=\[|--)", " ", block).splitlines():
            if line.startswith("usage: protein-performer"):
                lines.append(line.removeprefix("usage: protein-performer").strip())
    return lines


@pytest.mark.parametrize("line", usage_lines())
def test_readme_usage_line_names_options_that_exist(line):
    words = line.replace("[", " ").replace("]", " ").split()
    parser, rest = command_parser(words)
    assert rest and rest[0].startswith("--"), f"unknown command in README usage: {line}"
    actions = {option: action for action in parser._actions for option in action.option_strings}
    for i, word in enumerate(rest):
        if not word.startswith("--"):
            continue
        assert word in actions, f"README usage names {word}, which `{' '.join(words[:len(words) - len(rest)])}` lacks"
        value = rest[i + 1] if i + 1 < len(rest) else ""
        if "|" in value and actions[word].choices is not None:
            assert set(value.split("|")) <= set(actions[word].choices), f"{word} {value}: choices are {actions[word].choices}"


def test_readme_python_examples_name_what_exists():
    from protein_performer.inference import ProteinLanguageModel

    for block in fenced_blocks(README.read_text(), "python"):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("protein_performer"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "protein_performer":
                    assert hasattr(protein_performer, node.attr), f"protein_performer has no {node.attr}"
                if node.value.id == "plm":
                    assert hasattr(ProteinLanguageModel, node.attr), f"ProteinLanguageModel has no {node.attr}"


# ---- --help ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("words,parser", leaf_parsers(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_option_has_one_line_of_help_with_its_default(words, parser):
    assert parser.formatter_class is HelpFormatter and parser.description, words
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and "\n" not in action.help, f"{' '.join(words)} {action.option_strings}: no help"
        shown = formatter._get_help_string(action) % {"default": action.default}
        flag = action.nargs == 0
        if not (flag or action.required):
            assert "default" in shown, f"{' '.join(words)} {action.option_strings[0]}: help does not say its default: {shown}"


@pytest.mark.parametrize("words,parser", leaf_parsers(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_has_an_example_that_parses(words, parser):
    assert parser.epilog and "example" in parser.epilog, f"{' '.join(words)} has no example"
    examples = [line.strip() for line in parser.epilog.splitlines() if line.strip().startswith("protein-performer ")]
    assert examples, parser.epilog
    for example in examples:
        argv = shlex.split(example)[1:]
        assert argv[: len(words)] == list(words), example
        check_protein_performer(argv, example)


def test_train_help_gives_the_library_defaults_not_none():
    from protein_performer.model import PRESETS
    from protein_performer.training import TrainConfig

    text = command_parser(["train"])[0].format_help()
    assert "None" not in text
    defaults = TrainConfig()
    for option, value in (("--seq-len", defaults.seq_len), ("--max-steps", defaults.max_steps), ("--precision", defaults.precision),
                          ("--lr", defaults.lr), ("--warmup-steps", defaults.warmup_steps)):
        assert re.search(rf"{option} .*?default: {re.escape(str(value))}\)", " ".join(text.split())), option
    assert f"{PRESETS['tiny']['num_features']} (tiny)" in " ".join(text.split())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"protein-performer {protein_performer.__version__}"


def test_old_option_names_still_work():
    parser = build_parser()
    assert parser.parse_args(["convert", "--from", "a", "--out", "b"]).source == "a"
    assert parser.parse_args(["convert", "--checkpoint", "a", "--out", "b"]).source == "a"
    assert parser.parse_args(["report", "--run", "r"]).run == parser.parse_args(["report", "--checkpoint", "r"]).run == "r"


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--checkpoint", "x"], ["embed", "--checkpoint", "x", "--fasta", "f", "--out", "o"],
                                     ["fill-mask", "--checkpoint", "x", "--sequence", "M"], ["score", "--checkpoint", "x", "--sequence", "M"],
                                     ["probe", "--checkpoint", "x"], ["analyze", "approximation"], ["analyze", "similarity", "--checkpoint", "x"],
                                     ["analyze", "attention-maps", "--checkpoint", "x"], ["report", "--checkpoint", "x"]])
def test_threads_option(command):
    parser = build_parser()
    assert parser.parse_args(command).threads is None
    assert parser.parse_args([*command, "--threads", "3"]).threads == 3
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--threads", "0"])
