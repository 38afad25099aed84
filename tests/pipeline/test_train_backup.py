"""Where BackupAndRestore keeps its state: never the process's temporary directory."""
import tempfile

import pytest

from core.errors import ConfigError
from pipeline.config import config_from_dict
from pipeline.controller import backup_base_dir


def test_explicit_backup_dir_wins(tmp_path):
    cfg = config_from_dict({"storage": {"root": "s3://bucket/store"},
                            "training": {"backup_dir": "/var/lib/ctpipe/train-backup"}})
    assert backup_base_dir(cfg) == "/var/lib/ctpipe/train-backup"


def test_local_root_keeps_backups_under_the_root(tmp_path):
    cfg = config_from_dict({"storage": {"root": str(tmp_path / "store")}})
    path = backup_base_dir(cfg)
    assert path == str(tmp_path / "store" / "train-backup")
    assert not path.startswith(tempfile.gettempdir() + "/ctpipe-backup")


@pytest.mark.parametrize("root", ["s3://bucket/store", "gs://bucket/store"])
def test_object_store_root_without_backup_dir_is_refused(root):
    cfg = config_from_dict({"storage": {"root": root}})
    with pytest.raises(ConfigError, match=r"training\.backup_dir is not set.*persistent volume"):
        backup_base_dir(cfg)
