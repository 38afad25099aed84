"""The ``ctpipe`` command line as a whole: help everywhere, one exit-code table (core.errors) that
every epilog, the README and the docs agree with, errors -> exit codes, and the package's shape
(command modules import ``common`` only)."""
from __future__ import annotations

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

import core.errors as errors
from core.errors import EXIT_CODES, CtpipeError, StorageError
from pipeline.cli import main as console_main
from pipeline.cli.common import exit_codes_epilog
from pipeline.cli.main import main
from tests._cli import all_parsers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI_DIR = os.path.join(REPO, "pipeline", "cli")


def test_every_command_has_help_with_the_exit_code_table(capsys):
    seen = []
    for prefix, parser in all_parsers():
        with pytest.raises(SystemExit) as exit_info:
            main(list(prefix) + ["--help"])
        out = capsys.readouterr().out
        assert exit_info.value.code == 0, prefix
        assert out.startswith("usage: ctpipe"), prefix
        assert exit_codes_epilog() in out, f"ctpipe {' '.join(prefix)} --help lacks the exit-code table"
        seen.append(" ".join(prefix))
    for command in ("gen", "backfill", "stream", "train", "windows list", "windows show", "windows release",
                    "windows consistency", "schema infer", "schema show", "schema diff", "schema set", "report",
                    "registry list", "registry show", "registry promote", "registry rollback", "config schema",
                    "config show", "demo"):
        assert command in seen


def test_epilog_lists_every_code_of_the_table():
    epilog = exit_codes_epilog()
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^  {code} +{re.escape(meaning)}$", epilog, re.M)


def readme_exit_codes() -> dict:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    return {int(code): meaning.strip() for code, meaning in re.findall(r"^\| `(\d+)` \| (.+?) \|$", section, re.M)}


def test_readme_exit_codes_are_the_table():
    assert readme_exit_codes() == EXIT_CODES, "README.md's exit-code table differs from core/errors.py EXIT_CODES"


def test_docs_mention_only_codes_of_the_table():
    docs = [os.path.join(REPO, "README.md")] + glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True) \
        + glob.glob(os.path.join(REPO, "deploy", "**", "*.md"), recursive=True)
    for path in docs:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        for code in re.findall(r"exit(?:s| with)? code (\d+)", text, re.I):
            assert int(code) in EXIT_CODES, f"{path} mentions exit code {code}, not in core/errors.py EXIT_CODES"
        for code, meaning in re.findall(r"^\| `(\d+)` \| (.+?) \|$", text, re.M):
            assert EXIT_CODES.get(int(code)) == meaning.strip(), f"{path}: exit code {code} documented differently"


def test_every_error_class_carries_a_code_of_the_table():
    classes, todo = [], [CtpipeError]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo += cls.__subclasses__()
    assert {cls.exit_code for cls in classes} <= set(EXIT_CODES)
    assert not hasattr(errors, "GateRejected")  # exit code 10 is returned by train, not raised


def test_errors_become_their_exit_codes(monkeypatch, capsys, tmp_path):
    from pipeline.cli import windows

    config = tmp_path / "ctpipe.yaml"
    config.write_text(f"storage: {{root: {tmp_path / 'store'}}}\n")
    for raised, code in ((StorageError("corrupt manifest; restore it"), 4), (KeyboardInterrupt(), 130),
                         (RuntimeError("boom"), 1)):
        def handler(args, ctx, raised=raised):
            raise raised
        monkeypatch.setattr(windows, "run_list", handler)
        assert main(["windows", "list", "--config", str(config)]) == code
        err = capsys.readouterr().err
        assert {4: "ctpipe: error: corrupt manifest", 130: "ctpipe: interrupted",
                1: "ctpipe: internal error: RuntimeError: boom"}[code] in err
    with pytest.raises(SystemExit) as exit_info:
        main(["windows", "list", "--no-such-flag"])
    assert exit_info.value.code == 2  # argparse: bad command-line value
    bad = tmp_path / "bad.yaml"
    bad.write_text("storge: {root: /x}\n")
    assert main(["windows", "list", "--config", str(bad)]) == 2
    assert "unknown key 'storge'" in capsys.readouterr().err


def test_command_modules_import_common_only():
    for path in sorted(glob.glob(os.path.join(CLI_DIR, "*.py"))):
        name = os.path.basename(path)[:-3]
        if name in ("__init__", "__main__", "main", "common"):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        cli = {m for m in imported if m == "pipeline.cli" or m.startswith("pipeline.cli.")}
        assert cli == {"pipeline.cli.common"}, f"pipeline/cli/{name}.py imports {sorted(cli)}"
        assert callable(getattr(__import__(f"pipeline.cli.{name}", fromlist=["register"]), "register"))


def test_stream_help_shows_the_runner_default():
    from pipeline.cli.stream import CYCLE_RECORDS_DEFAULT_TEXT

    tree = ast.parse(open(os.path.join(REPO, "pipeline", "stream.py"), encoding="utf-8").read())
    value = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["DEFAULT_MAX_RECORDS_PER_CYCLE"])
    assert CYCLE_RECORDS_DEFAULT_TEXT == f"{value:,}"


def test_entry_points():
    assert console_main is main  # setup.py: ctpipe=pipeline.cli:main
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as handle:
        assert '"ctpipe=pipeline.cli:main"' in handle.read()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=600)
    assert proc.returncode == 0 and "exit codes:" in proc.stdout, proc.stderr
