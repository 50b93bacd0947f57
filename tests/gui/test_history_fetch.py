"""history_fetch copies only a history's own files, with the node's real tar (a local runner here;
over SSH in tests/analyzer/test_cluster_history.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omview.gui.history_fetch import FetchError, cache_dir, fetch_history
from omview.gui.node_exec import LocalRunner


def test_only_history_files_are_copied_and_old_ones_removed(tmp_path: Path) -> None:
    src = tmp_path / "log"
    (src / "sub").mkdir(parents=True)
    for name in ("cluster", "procs", "node1", "node12.xz"):
        (src / name).write_bytes(name.encode() * 3)
    (src / "collector.log").write_text("log")
    (src / "sub" / "cluster").write_text("not this one")
    (src / "node9").symlink_to("/etc/passwd")  # a link named like a node file is not followed
    dest = cache_dir("root@10.0.0.1:22", str(src), tmp_path / "cache")
    assert dest == tmp_path / "cache" / "root_10.0.0.1_22" / "log"
    (dest).mkdir(parents=True)
    (dest / "node7").write_text("a node of an earlier copy")
    assert fetch_history(LocalRunner(), str(src), dest) == 4
    assert sorted(os.listdir(dest)) == ["cluster", "node1", "node12.xz", "procs"]
    assert (dest / "node12.xz").read_bytes() == b"node12.xz" * 3


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="cannot read the history .*nowhere on this machine"):
        fetch_history(LocalRunner(), str(tmp_path / "nowhere"), tmp_path / "dest")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError, match="no cluster file"):
        fetch_history(LocalRunner(), str(tmp_path / "empty"), tmp_path / "dest")
