"""deploy/airflow/ctpipe_dag.py: valid Python, BashOperator tasks stream --until-idle -> train.

Airflow is not a dependency of ctpipe, so the DAG is checked statically (ast) instead of being
imported.
"""
import ast
import re
import shlex
from pathlib import Path

from tests._cli import parses_as_ctpipe

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "deploy" / "airflow" / "ctpipe_dag.py"



def tree():
    return ast.parse(DAG_FILE.read_text(), filename=str(DAG_FILE))


def module_constants(t):
    consts = {}
    for node in t.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    consts[target.id] = node.value.value
    return consts


def render(node, consts):
    """The string a Constant / f-string / Name evaluates to, module constants substituted."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return consts[node.id]
    if isinstance(node, ast.JoinedStr):
        return "".join(render(v.value if isinstance(v, ast.FormattedValue) else v, consts)
                       for v in node.values)
    raise AssertionError(f"bash_command must be a literal or f-string, got {ast.dump(node)}")


def bash_tasks():
    t = tree()
    consts = module_constants(t)
    tasks = {}
    for node in ast.walk(t):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", None) == "BashOperator":
            kw = {k.arg: k.value for k in node.value.keywords}
            tasks[node.targets[0].id] = (kw["task_id"].value, render(kw["bash_command"], consts))
    return t, tasks


def test_dag_is_valid_python():
    compile(DAG_FILE.read_text(), str(DAG_FILE), "exec")


def test_tasks_run_real_ctpipe_subcommands():
    _, tasks = bash_tasks()
    assert len(tasks) == 2
    for var, (task_id, command) in tasks.items():
        argv = shlex.split(command)
        assert argv[0] == "ctpipe", command
        # Jinja expressions are rendered by Airflow at run time: one value each for the parser.
        rendered = shlex.split(re.sub(r"\{\{.*?\}\}", "/rendered/value", command))
        assert parses_as_ctpipe(rendered[1:]), f"{task_id}: `{command}` is not a valid ctpipe command line"
        assert "--config" in argv
    commands = {var: shlex.split(cmd) for var, (_, cmd) in tasks.items()}
    assert commands["stream"][1:3] == ["stream", "--until-idle"]
    assert commands["train"][1] == "train"


def test_stream_runs_before_train():
    t, tasks = bash_tasks()
    edges = [(n.left.id, n.right.id) for n in ast.walk(t)
             if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)
             and isinstance(n.left, ast.Name) and isinstance(n.right, ast.Name)]
    assert edges == [("stream", "train")]


def test_dag_settings():
    t = tree()
    call = next(n for n in ast.walk(t) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DAG")
    kw = {k.arg: k.value for k in call.keywords}
    assert kw["catchup"].value is False
    assert kw["max_active_runs"].value == 1
    assert len(kw["schedule"].value.split()) == 5
