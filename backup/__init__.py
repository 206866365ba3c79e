"""volsafe: back up, restore and migrate Docker volumes."""

import importlib
import importlib.util
import sys
import threading
import types

__version__ = "0.1.0"

_SSHCONN = "docker.transport.sshconn"


def _defer_docker_ssh_transport() -> None:
    """Keep docker-py from importing paramiko until an ``ssh://`` host needs it.

    docker-py imports its SSH transport, and with it paramiko, invoke and cryptography's SSH parts,
    whenever it is imported: about 0.15 s of every command's start-up (``python -X importtime``),
    though only ``ssh://`` hosts use it. This puts a stand-in for ``docker.transport.sshconn`` in
    ``sys.modules`` whose ``SSHHTTPAdapter`` imports the real module when first called. (The
    standard LazyLoader cannot do this on Python 3.11: the ``import paramiko`` statement itself
    touches the module and loads it.) Does nothing if paramiko is missing, so docker-py's own
    "install paramiko" error stays, or if docker-py is already imported.
    """
    if "docker" in sys.modules or importlib.util.find_spec("paramiko") is None:
        return
    swap = threading.Lock()  # two threads may open their first ssh:// client at once

    def real_sshconn() -> types.ModuleType:
        with swap:
            if sys.modules.get(_SSHCONN) is stand_in:
                sys.modules.pop(_SSHCONN)
            return importlib.import_module(_SSHCONN)

    def SSHHTTPAdapter(*args, **kwargs):  # noqa: N802 - stands in for docker-py's class
        try:
            module = real_sshconn()
        except ImportError as exc:
            # docker-py turns a NameError here into its "Install paramiko package" error, as it
            # does when its own import of the transport failed.
            raise NameError(f"docker-py's SSH transport cannot be imported: {exc}") from exc
        return module.SSHHTTPAdapter(*args, **kwargs)

    stand_in = types.ModuleType(_SSHCONN, "Loads docker.transport.sshconn on first use (see backup/__init__.py).")
    stand_in.SSHHTTPAdapter = SSHHTTPAdapter  # type: ignore[attr-defined]  # a module object built here at run time
    sys.modules[_SSHCONN] = stand_in


_defer_docker_ssh_transport()
