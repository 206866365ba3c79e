"""backup.cli.state: one connection to the daemon per command, however often its name is asked."""

from __future__ import annotations

from backup.cli import state as state_module
from backup.cli.state import State


class _Daemon:
    host_name = "box"
    host_name_override = None


def test_asking_the_hosts_name_then_using_the_daemon_connects_once(monkeypatch):
    connections: list[_Daemon] = []
    recovered: list[_Daemon] = []

    def connect(self):
        connections.append(_Daemon())
        return connections[-1]

    monkeypatch.setattr(State, "_connect", connect)
    monkeypatch.setattr(state_module, "_recover", recovered.append)
    monkeypatch.delenv("VOLSAFE_HOST_NAME", raising=False)
    state = State()
    monkeypatch.setattr(State, "configured_host_name", None)
    assert state.this_host_if_known() == "box"
    assert state.this_host_if_known() == "box"
    assert len(connections) == 1  # asked twice: one connection
    assert state.docker is connections[0]  # the command's daemon is that connection
    assert recovered == [connections[0]]  # and crash recovery runs on it when the daemon is used
    assert state.this_host_if_known() == "box" and len(connections) == 1
