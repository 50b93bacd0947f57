"""L4 GUI layer: Config > Connection settings (entry node, SSH user, identity, known_hosts, ssh config)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from omview.gui.settings import GuiSettings


class ConnectionDialog(QDialog):
    """Edit the connection settings; ``settings()`` returns what the form holds."""

    def __init__(self, current: GuiSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("openmosixview - connection settings")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.entry = QLineEdit(current.entry)
        self.entry.setToolTip("The node whose agent lists the cluster (its cluster table); default: this machine")
        self.user = QLineEdit(current.user or "")
        self.user.setPlaceholderText("from ssh config, else root")
        self.identity = QLineEdit(current.identity or "")
        self.identity.setPlaceholderText("ssh-agent and default keys")
        self.known_hosts = QLineEdit(current.known_hosts or "")
        self.known_hosts.setPlaceholderText("from ssh config, else ~/.ssh/known_hosts")
        self.ssh_config = QLineEdit(current.ssh_config or "")
        self.ssh_config.setPlaceholderText("~/.ssh/config")
        self.agent_command = QLineEdit(current.agent_command)
        self.interval = QDoubleSpinBox()
        self.interval.setRange(0.2, 600.0)
        self.interval.setSuffix(" s")
        self.interval.setValue(current.poll_interval)
        self.direct = QCheckBox("ask every node's own agent (shows each node's connection state)")
        self.direct.setChecked(current.direct_poll)
        form.addRow("entry node", self.entry)
        form.addRow("SSH user", self.user)
        form.addRow("identity file", self.identity)
        form.addRow("known_hosts", self.known_hosts)
        form.addRow("ssh config", self.ssh_config)
        form.addRow("agent command", self.agent_command)
        form.addRow("refresh every", self.interval)
        form.addRow("", self.direct)
        layout.addLayout(form)
        note = QLabel("Saved settings take effect the next time openmosixview starts.")
        note.setStyleSheet("color: palette(mid);")
        layout.addWidget(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._base = current
        self.setMinimumWidth(460)

    def settings(self) -> GuiSettings:
        def text(edit: QLineEdit) -> str | None:
            return edit.text().strip() or None

        return GuiSettings(
            entry=text(self.entry) or "localhost",
            user=text(self.user),
            identity=text(self.identity),
            known_hosts=text(self.known_hosts),
            ssh_config=text(self.ssh_config),
            agent_command=text(self.agent_command) or self._base.agent_command,
            poll_interval=self.interval.value(),
            direct_poll=self.direct.isChecked(),
            connect_timeout=self._base.connect_timeout,
            call_timeout=self._base.call_timeout,
        )
