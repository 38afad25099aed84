import pytest

from core.errors import ConfigError
from pipeline.config import Config, config_from_dict, load_config, parse_duration


def test_defaults_are_valid_and_frozen():
    config = Config()
    assert config.window.size_s == 3600
    with pytest.raises(Exception):
        config.window = None  # frozen


def test_unknown_key_names_full_path_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"window": {"sise": "1h"}})
    assert "window.sise" in str(err.value)
    assert "allowed_lateness" in str(err.value) and "size" in str(err.value)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="'storge'"):
        config_from_dict({"storge": {"root": "/x"}})


@pytest.mark.parametrize("data, fragment", [
    ({"window": {"size": "7m"}}, "divide one day"),
    ({"window": {"size": "soon"}}, "not a duration"),
    ({"source": {"files": {"format": "xml"}}}, "jsonl, csv or parquet"),
    ({"training": {"epochs": "3"}}, "training.epochs: expected an integer"),
    ({"gate": {"thresholds": [{"metric": "f1"}]}}, "gate.thresholds[0].metric: 'f1' is not one of auc"),
    ({"gate": {"thresholds": [{"metrc": "auc"}]}}, "gate.thresholds[0].metrc"),
    ({"source": {"kafka": {"security_protocol": "SASL"}}}, "security_protocol"),
])
def test_bad_values_are_named(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(data)


def test_load_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("storage:\n  root: s3://bucket/prefix\nwindow:\n  size: 30m\n  allowed_lateness: 5m\n"
                    "gate:\n  thresholds:\n    - {metric: auc, lower_bound: 0.6}\n")
    config = load_config(str(path))
    assert config.storage.root == "s3://bucket/prefix"
    assert config.window.size_s == 1800 and config.window.lateness_s == 300
    assert config.gate.thresholds[0].lower_bound == 0.6


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_parse_duration():
    assert parse_duration("90s") == 90
    assert parse_duration("1d") == 86400
    assert parse_duration(15) == 15


@pytest.mark.parametrize("data, fragment", [
    ({"window": {"size": "500ms"}}, "window.size: '500ms' is shorter than one minute"),
    ({"window": {"size": "0s"}}, "window.size: '0s' is shorter than one minute"),
    ({"window": {"size": "30s"}}, "window.size: '30s' is shorter than one minute, and window ids name the minute"),
    ({"window": {"size": "90s"}}, "window.size: '90s' is not a whole number of minutes"),
    ({"window": {"allowed_lateness": "250ms"}}, "window.allowed_lateness: '250ms' is not a whole number of seconds"),
    ({"source": {"kafka": {"max_records_per_split": 0}}}, "source.kafka.max_records_per_split: 0 must be at least 1"),
    ({"source": {"kafka": {"max_message_bytes": -5}}}, "source.kafka.max_message_bytes: -5 must be at least 1"),
    ({"training": {"eval_fraction": 1}}, "training.eval_fraction: 1.0 must be below 1"),
    ({"training": {"batch_size": 0}}, "training.batch_size: 0 must be at least 1"),
    ({"metrics": {"port": 70000}}, "metrics.port: 70000 must be at most 65535"),
    ({"source": {"kafka": {"sasl_password_env": "hunter 2"}}}, "is not an environment variable name"),
    ({"source": {"kafka": {"sasl_password": "hunter2"}}}, "secrets are never read from the config"),
    ({"storage": {"root": None}}, "storage.root: expected a string, got None"),
    ({"validation": {"serving_data": "a/*", "serving_stats_uri": "b"}}, "validation: set serving_stats_uri or"),
])
def test_rejections_name_the_key_and_the_fix(data, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert fragment in str(err.value)


def test_whole_minute_windows_are_accepted():
    assert config_from_dict({"window": {"size": "60000ms", "allowed_lateness": "0s"}}).window.size_s == 60
    assert config_from_dict({"window": {"size": "120s"}}).window.size_s == 120


def test_replace_checks_the_new_values():
    config = Config()
    changed = config.replace(source=config.source.replace(files=config.source.files.replace(uri="in/*.csv",
                                                                                           format="csv")))
    assert changed.source.files.uri == "in/*.csv" and config.source.files.uri == ""
    with pytest.raises(ConfigError, match="size: '7m' does not divide one day"):
        config.window.replace(size="7m")


def test_defaults_round_trip_through_a_dict():
    from pipeline.config import to_dict

    assert config_from_dict(to_dict(Config())) == Config()


def test_window_batch_rows_reaches_sealing_and_is_bounded(tmp_path):
    from pipeline.specs import seal_spec

    config = config_from_dict({"storage": {"root": str(tmp_path)}, "window": {"batch_rows": 100}})
    assert seal_spec(config, "", 1, "run-1", fingerprint="f" * 16).batch_rows == 100
    assert seal_spec(config_from_dict({}), "", 1, "run-1", fingerprint="f" * 16).batch_rows == 8192
    for bad in (0, 2_000_000):
        with pytest.raises(ConfigError, match="window.batch_rows"):
            config_from_dict({"window": {"batch_rows": bad}})
