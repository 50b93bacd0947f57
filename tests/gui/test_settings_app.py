"""Settings persistence, the legacy ~/.openMosixview import, window geometry and the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

from omview.gui.connect import SshConnector, UnixConnector
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings, import_legacy, load, save
from omview.openmosixview.app import build_parser, make_connector, make_settings
from omview.openmosixview.window import MainWindow


def store(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "omview.ini"), QSettings.Format.IniFormat)


def test_settings_round_trip(tmp_path: Path) -> None:
    s = GuiSettings(entry="10.77.0.11", user="admin", identity="/k/id", poll_interval=2.5, direct_poll=False)
    save(store(tmp_path), s)
    assert load(store(tmp_path)) == s
    assert load(store(tmp_path / "nothing-here")) == GuiSettings()


def test_command_line_overrides_saved_settings(tmp_path: Path) -> None:
    st = store(tmp_path)
    save(st, GuiSettings(entry="saved-entry", user="saved-user", poll_interval=5.0))
    args = build_parser().parse_args(["--entry", "10.77.0.12", "--no-direct"])
    s = make_settings(args, st)
    assert (s.entry, s.user, s.poll_interval, s.direct_poll) == ("10.77.0.12", "saved-user", 5.0, False)
    assert isinstance(make_connector(s), SshConnector)
    target = make_connector(s).target("10.77.0.12")  # type: ignore[attr-defined]
    assert target.user == "saved-user"


def test_ssh_config_is_honoured(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host node7\n  HostName 10.77.0.17\n  Port 2222\n  User ops\n  IdentityFile /keys/id\n"
                   f"  UserKnownHostsFile {tmp_path}/kh\n")
    t = SshConnector(GuiSettings(ssh_config=str(cfg)).ssh()).target("node7")
    assert (t.address, t.port, t.user, t.identity_files, t.known_hosts) == (
        "10.77.0.17", 2222, "ops", ("/keys/id",), f"{tmp_path}/kh")
    t2 = SshConnector(GuiSettings(ssh_config=str(cfg), user="root", known_hosts="/x/kh").ssh()).target("node7")
    assert (t2.user, t2.known_hosts) == ("root", "/x/kh")


def test_legacy_file_is_read_once(tmp_path: Path) -> None:
    legacy = tmp_path / ".openMosixview"
    legacy.write_text("1111\n")
    st = store(tmp_path)
    msg = import_legacy(st, legacy)
    assert msg is not None and "SSH" in msg
    assert st.value("legacy/content") == "1111"
    assert import_legacy(st, legacy) is None  # only once
    other = store(tmp_path / "b")
    legacy.write_text("1110")
    assert "rsh is not supported" in (import_legacy(other, legacy) or "")


def test_window_remembers_its_geometry(qtbot: Any, tmp_path: Path) -> None:
    session = ClusterSession(UnixConnector({}), "nowhere", poll_interval=0)
    st = store(tmp_path)
    w = MainWindow(session, GuiSettings(), st)
    qtbot.addWidget(w)
    w.show()
    w.resize(760, 333)
    size = (w.width(), w.height())
    assert size != (1080, 560)  # not the default size
    w.close()
    w2 = MainWindow(session, GuiSettings(), store(tmp_path))
    qtbot.addWidget(w2)
    assert (w2.width(), w2.height()) == size
    session.stop()
