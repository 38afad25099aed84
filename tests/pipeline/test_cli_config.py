"""``ctpipe config schema|show``, the JSON Schema of ctpipe.yaml and examples/ctpipe.yaml."""
from __future__ import annotations

import json
import os

import jsonschema
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.config import json_schema, load_config, redacted

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "ctpipe.yaml")
EXAMPLE_SCHEMA = os.path.join(REPO, "examples", "ctpipe.schema.json")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_example_config_loads_and_matches_the_schema():
    config = load_config(EXAMPLE)
    assert config.source.kafka.topic == "sensor-events" and config.training.backup_dir
    with open(EXAMPLE, encoding="utf-8") as handle:
        validator().validate(yaml.safe_load(handle))


def test_committed_schema_is_the_current_one():
    with open(EXAMPLE_SCHEMA, encoding="utf-8") as handle:
        committed = json.load(handle)
    assert committed == json_schema(), "regenerate it: ctpipe config schema > examples/ctpipe.schema.json"


def test_schema_rejects_what_the_loader_rejects():
    check = validator()
    for bad in ({"window": {"sise": "1h"}}, {"window": {"size": "one hour"}},
                {"source": {"files": {"format": "xml"}}}, {"source": {"kafka": {"max_records_per_split": 0}}},
                {"validation": {"drift": {"temperature": {"kl": 0.1}}}}, {"training": {"epochs": "3"}}):
        assert list(check.iter_errors(bad)), bad
    check.validate({"window": {"size": "15m"}, "validation": {"drift": {"temperature": {"js": 0.2}}}})


def test_config_schema_command_prints_the_schema(capsys):
    code, out, _ = run(capsys, "config", "schema")
    assert code == 0 and json.loads(out) == json_schema()
    described = json.loads(out)["$defs"]["WindowConfig"]["properties"]["size"]
    assert described["default"] == "1h" and "divid" in described["description"]


def test_config_show_prints_the_effective_config(capsys, tmp_path):
    path = tmp_path / "ctpipe.yaml"
    path.write_text("storage: {root: /data/store}\nwindow: {size: 30m}\n")
    code, out, _ = run(capsys, "config", "show", "--config", str(path))
    assert code == 0 and out.startswith(f"# effective ctpipe configuration from {path}")
    shown = yaml.safe_load(out)
    assert shown["storage"]["root"] == "/data/store" and shown["window"]["size"] == "30m"
    assert shown["training"]["epochs"] == 3  # defaults filled in
    code, out, _ = run(capsys, "config", "show", "--config", str(path), "--json")
    assert code == 0 and json.loads(out)["window"]["size"] == "30m"


def test_config_show_never_prints_a_secret(capsys, tmp_path, monkeypatch):
    secret_file = tmp_path / "kafka-password"
    secret_file.write_text("file-secret-value\n")
    monkeypatch.setenv("CTPIPE_TEST_KAFKA_USER", "env-secret-value")
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"kafka": {"bootstrap_servers": "b:9093", "topic": "t", "security_protocol": "SASL_SSL",
                             "sasl_mechanism": "PLAIN", "sasl_username_env": "CTPIPE_TEST_KAFKA_USER",
                             "sasl_password_file": str(secret_file)}},
        "registry": {"uri": "mlflow+https://bob:url-secret-value@mlflow.example:5000"},
        "metrics": {"pushgateway": "ops:gw-secret-value@pushgateway:9091"},
    }))
    for argv in (["config", "show"], ["config", "show", "--json"]):
        code, out, err = run(capsys, *argv, "--config", str(path))
        assert code == 0, err
        assert "secret-value" not in out
        assert "mlflow+https://bob:***@mlflow.example:5000" in out and "ops:***@pushgateway:9091" in out
        # The Kafka settings name where the secrets are; they are shown, their contents never read.
        assert "CTPIPE_TEST_KAFKA_USER" in out and str(secret_file) in out


def test_redacted_leaves_plain_addresses_alone():
    config = load_config(EXAMPLE)
    data = redacted(config)
    assert data["source"]["kafka"]["bootstrap_servers"] == "broker-1:9093,broker-2:9093"
    assert data["source"]["kafka"]["sasl_password_file"] == "/var/run/secrets/kafka/password"


def test_bad_config_file_is_exit_code_2_naming_the_key(capsys, tmp_path):
    path = tmp_path / "ctpipe.yaml"
    path.write_text("window: {size: 500ms}\n")
    code, _, err = run(capsys, "config", "show", "--config", str(path))
    assert code == 2 and "window.size: '500ms' is shorter than one minute" in err


@pytest.mark.parametrize("argv", [["config", "--help"], ["config", "schema", "--help"], ["config", "show", "--help"]])
def test_config_help(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0 and "exit codes:" in capsys.readouterr().out
