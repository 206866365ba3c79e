"""QuiesceSession without a daemon: one session over several volumes, finishing after the last
volume is read, the warning's wording and when a pre-hook silences it, cut-over, problems reported once."""

from __future__ import annotations

import logging

import pytest

from backup.quiesce.plan import from_listing
from backup.quiesce.session import CLI_ADVICE, QuiesceSession, job_advice


class FakeApi:
    """Enough of docker-py's APIClient for a session: a container list and stop/start calls."""

    def __init__(self, containers):
        self.listing = containers
        self.calls: list[tuple[str, str]] = []
        self.filters = None

    def containers(self, all, filters):
        self.filters = filters
        wanted = set(filters["volume"])
        return [c for c in self.listing if any(m["Name"] in wanted for m in c["Mounts"])]

    def stop(self, cid):
        self.calls.append(("stop", cid))

    def start(self, cid):
        self.calls.append(("start", cid))


class FakeHost:
    url = "unix:///fake.sock"
    daemon_id = "FAKE:ID"
    name = "fake"

    def __init__(self, containers):
        self.api = FakeApi(containers)


def container(name, volumes, service=None, depends_on=None, **labels):
    all_labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": service or name, **labels}
    if depends_on:
        all_labels["com.docker.compose.depends_on"] = depends_on
    return {
        "Id": f"id-{name}", "Names": [f"/{name}"], "State": "running", "Labels": all_labels,
        "Mounts": [{"Type": "volume", "Name": v, "RW": True} for v in volumes],
    }


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("VOLSAFE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def shop():
    return FakeHost([container("db", ["db"]), container("api", ["db", "files"], depends_on="db:service_started:false")])


def test_a_container_using_two_volumes_is_listed_and_stopped_once():
    host = shop()
    session = QuiesceSession(host, ["db", "files"], mode="stop")
    assert [c.name for c in session.survey().plan.order] == ["api", "db"]
    assert host.api.filters == {"volume": ["db", "files"]}  # one listing for both
    session.start()
    session.volume_done("db")
    assert host.api.calls == [("stop", "id-api"), ("stop", "id-db")]  # still down: files is not read yet
    session.volume_done("files")
    assert host.api.calls[2:] == [("start", "id-db"), ("start", "id-api")]
    session.finish()  # once only
    assert len(host.api.calls) == 4


def test_writable_means_any_of_the_volumes():
    entry = container("x", ["a"])
    entry["Mounts"] = [{"Type": "volume", "Name": "a", "RW": False}, {"Type": "volume", "Name": "b", "RW": True}]
    assert from_listing(entry, ["a", "b"]).writable
    assert not from_listing(entry, "a").writable
    assert from_listing(entry, ["c"]) is None


def test_the_crash_record_exists_while_containers_are_down(state):
    host = shop()
    with QuiesceSession(host, ["db"], mode="stop", action="restore"):
        (record,) = state.rglob("*.json")
        assert '"action": "restore"' in record.read_text()
    assert not list(state.rglob("*.json"))


def test_cut_over_leaves_them_stopped_and_drops_the_record(state):
    host = shop()
    session = QuiesceSession(host, ["db"], mode="stop")
    session.start()
    assert sorted(session.finish(restart=False)) == ["api", "db"]
    assert [a for a, _ in host.api.calls] == ["stop", "stop"]
    assert not list(state.rglob("*.json"))


def test_the_warning_names_the_cli_flags_or_the_jobs_keys(caplog):
    caplog.set_level(logging.WARNING, "volsafe.quiesce")
    QuiesceSession(shop(), ["db"]).start()
    assert "only crash-consistent (use --stop or --pause)" in caplog.text and "api, db" in caplog.text
    caplog.clear()
    QuiesceSession(shop(), ["db"], advice=job_advice("nightly")).start()
    assert "(set stop_containers or pause_containers in job 'nightly')" in caplog.text
    assert CLI_ADVICE not in caplog.text


def test_a_successful_pre_hook_silences_the_warning(caplog, monkeypatch):
    from backup.quiesce import hooks
    from backup.quiesce.hooks import HookFailed, HookSpec

    ran = []
    monkeypatch.setattr(hooks, "run_hook", lambda host, c, cmd, timeout, what: ran.append(cmd))
    caplog.set_level(logging.WARNING, "volsafe.quiesce")
    QuiesceSession(shop(), ["db"], hooks=[HookSpec("db", pre="dump", source="job nightly")]).start()
    assert ran == ["dump"] and "crash-consistent" not in caplog.text

    # A label hook of one writer silences the warning for that writer only.
    host = FakeHost([container("db", ["db"], **{"volsafe.hook.pre": "dump"}), container("api", ["db"])])
    QuiesceSession(host, ["db"]).start()
    assert "running container(s) api:" in caplog.text

    # A pre-hook that failed (on_error = continue) made nothing consistent: the warning stays.
    caplog.clear()

    def fail(*args):
        raise HookFailed("dump failed")

    monkeypatch.setattr(hooks, "run_hook", fail)
    QuiesceSession(shop(), ["db"], hooks=[HookSpec("db", pre="dump", on_error="continue")]).start()
    assert "only crash-consistent" in caplog.text


def test_problems_are_claimed_once():
    host = shop()

    def broken_start(cid):
        raise __import__("backup.errors", fromlist=["VolsafeError"]).VolsafeError("boom")

    host.api.start = broken_start
    session = QuiesceSession(host, ["db", "files"], mode="stop")
    session.start()
    assert session.claim_problems() == []  # not finished yet
    session.volume_done("db")
    session.volume_done("files")
    problems = session.claim_problems()
    assert len(problems) == 2 and all("boom" in p for p in problems)
    assert session.claim_problems() == []
