"""The benchmark's pure parts: medians, ratios, table, targets, and the data generators' determinism.

Fast and daemon-free: the generators are hashed as tar streams, never written to Docker.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from bench import datasets as D
from bench import report as R
from bench.contenders import parse_usage, rotate
from bench.run import disk_needed, parse_levels

MB = R.MB


def _run(s, stored=None, rss=None):
    r = {"seconds": s}
    if stored is not None:
        r["stored_size"] = stored
    if rss is not None:
        r.update(peak_rss_mb=rss, cpu_user_s=1.0, cpu_sys_s=0.5)
    return r


VS_B, VS_R = "volsafe backup (local)", "volsafe restore (local)"
ORDER = [
    ("backup", VS_B),
    ("backup", R.BACKUP_REF),
    ("backup", R.FLOOR_BACKUP),
    ("backup", R.GZIP_BACKUP),
    ("restore", VS_R),
    ("restore", R.RESTORE_REF),
    ("restore", R.RESTIC_RESTORE),
]


def _rounds(vs_backup=10.0, vs_restore=11.0, vs_stored=300 * MB, gz_stored=320 * MB, rss=90.0, restic_restore=12.0):
    return [
        {
            VS_B: _run(vs_backup + d, vs_stored, rss),
            R.BACKUP_REF: _run(9.5 + d, 310 * MB, 20),
            R.FLOOR_BACKUP: _run(8.0 + d, 600 * MB),
            R.GZIP_BACKUP: _run(60.0 + d, gz_stored),
            VS_R: _run(vs_restore + d, rss=rss - 10),
            R.RESTORE_REF: _run(10.5 + d),
            R.RESTIC_RESTORE: _run(restic_restore + d),
        }
        for d in (0.0, 1.0, -0.5)
    ]


def test_median_and_ratio():
    assert R.median([3, None, 1, 2]) == 2
    assert R.median([None]) is None
    assert R.ratio(3, 2) == 1.5
    assert R.ratio(1, 0) is None and R.ratio(None, 1) is None


def test_summarize_medians_ratios_and_sizes():
    rows = R.summarize(_rounds(), ORDER, 600 * MB)
    vs = R.find(rows, "backup", VS_B)
    assert vs["median_s"] == 10.0 and vs["min_s"] == 9.5 and vs["max_s"] == 11.0
    assert vs["ratio"] == pytest.approx(10.0 / 9.5)
    assert vs["mb_per_s"] == pytest.approx(60.0)
    assert vs["stored_pct"] == pytest.approx(50.0)
    assert vs["peak_rss_mb"] == 90.0 and vs["cpu_s"] == 1.5
    assert R.find(rows, "backup", R.BACKUP_REF)["ratio"] == 1.0
    assert R.find(rows, "restore", VS_R)["ratio"] == pytest.approx(11.0 / 10.5)
    assert R.find(rows, "restore", R.RESTORE_REF)["peak_rss_mb"] is None


def test_summarize_skips_missing_contenders():
    rows = R.summarize([{VS_B: _run(1.0)}], ORDER, MB)
    assert [r["name"] for r in rows] == [VS_B]
    assert rows[0]["ratio"] is None


def test_targets_met_and_missed():
    rows = R.summarize(_rounds(), ORDER, 600 * MB)
    t = {x["target"]: x for x in R.check_targets({"mixed": rows}, VS_B, VS_R)}
    assert t["backup within 1.2x of `host tar | zstd -T0 -3`"]["ok"] is True
    assert t["backup at least 5x faster than `tar -czf`"]["ok"] is True  # 60 / 10
    assert t["stored size within 1.02x of gzip -6 (`tar -czf`)"]["ok"] is True
    assert t["restore within 1.1x of `recipe tar -xf`"]["ok"] is True
    assert t["restore no slower than `restic restore`"]["ok"] is True  # 11.0 vs 12.0
    rss = [x for x in t.values() if x["dataset"] == "big"][0]
    assert rss["ok"] is None and "mixed 90 MB" in rss["measured"]

    slow = R.summarize(_rounds(vs_backup=13.0, vs_restore=20.0, vs_stored=330 * MB, rss=200), ORDER, 600 * MB)
    t = R.check_targets({"mixed": slow, "big": slow}, VS_B, VS_R)
    assert [x["ok"] for x in t] == [False] * 7  # 1.37x, 4.6x, 1.03x gzip, big 1.37x, two restores, 200 MB
    text = "\n".join(R.target_lines(t))
    assert "Targets met: 0 of 7 measured" in text and "13.00 s vs 9.50 s = 1.37x" in text
    assert "big: backup within 1.15x of `host tar | zstd -T0 -3` (13.00 s vs 9.50 s = 1.37x)" in text
    assert "20.00 s vs 12.00 s = 1.67x" in text  # volsafe restore against restic restore


def test_small_targets_and_not_measured():
    rows = R.summarize(_rounds(), ORDER, 600 * MB)
    t = [x for x in R.check_targets({"small": rows}, VS_B, VS_R) if x["dataset"] == "small"]
    assert [x["ok"] for x in t] == [False, True, True]  # 10.0 vs tar -cf 8.0 = 1.25x; 11.0 vs 10.5; 11.0 vs restic 12.0
    # issue 19: restores within 1.1x of the recipe (not 1.2x), and no slower than restic (equal is met)
    rows = R.summarize(_rounds(vs_restore=12.0), ORDER, 600 * MB)
    t = {x["target"]: x["ok"] for x in R.check_targets({"small": rows}, VS_B, VS_R) if x["dataset"] == "small"}
    assert t["restore within 1.1x of `recipe tar -xf`"] is False  # 12.0 / 10.5 = 1.14x
    assert t["restore no slower than `restic restore`"] is True  # 12.0 / 12.0
    rows = R.summarize(_rounds(restic_restore=10.9), ORDER, 600 * MB)
    t = {x["target"]: x["ok"] for x in R.check_targets({"small": rows}, VS_B, VS_R) if x["dataset"] == "small"}
    assert t["restore no slower than `restic restore`"] is False  # 11.0 / 10.9
    t = R.check_targets({"mixed": R.summarize(_rounds(), ORDER[:2], MB)}, VS_B, VS_R)
    assert any(x["ok"] is None and "not measured" in x["measured"] for x in t)


def test_table_escapes_pipes():
    lines = R.table(R.summarize(_rounds(), ORDER, 600 * MB))
    assert any("host tar \\| zstd -T0 -3" in line for line in lines)
    assert all(line.count("|") - line.count("\\|") == 13 for line in lines)  # 12 columns


def test_machine_cpu_and_cores_busy():
    """The whole machine's CPU (helper containers included) and the cores it kept busy, as medians."""
    rounds = [{VS_B: {"seconds": s + 0.1, "command_s": s, "machine_cpu_s": cpu}} for s, cpu in ((2.0, 3.0), (4.0, 4.0), (3.0, 4.5))]
    row = R.summarize(rounds, ORDER, 600 * MB)[0]
    assert row["machine_cpu_s"] == 4.0 and row["cores"] == 1.5  # medians of 3.0, 4.0, 4.5 and of 1.5, 1.0, 1.5
    assert row["cpu_s"] is None  # no rusage for this row
    line = R.table([row])[-1]
    assert line.endswith("| 4.0 | 1.50 |")


def test_parse_usage_gnu_time():
    text = "\tUser time (seconds): 1.25\n\tSystem time (seconds): 0.50\n\tMaximum resident set size (kbytes): 102400\n\tExit status: 0\n"
    u = parse_usage(text)
    assert u == {"peak_rss_mb": pytest.approx(104.8576), "cpu_user_s": 1.25, "cpu_sys_s": 0.5}


def test_helpers():
    assert rotate([1, 2, 3], 1) == [2, 3, 1] and rotate([1, 2, 3], 4) == [2, 3, 1] and rotate([], 2) == []
    assert parse_levels(None) == [None] and parse_levels("1,3,default") == [1, 3, None]
    assert disk_needed(10 * 10**9, ["volsafe", "tar", "host-zstd"], 1) < 60 * 10**9


GENERATORS = {
    "mixed": lambda seed: D.mixed_entries(2, seed),
    "small": lambda seed: D.small_entries(300, seed),
    "big": lambda seed: D.big_entries(0.02, seed, file_size=4 * D.MiB, pool_size=2 * D.MiB),
}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generators_are_deterministic(name):
    a = D.tar_digest(GENERATORS[name](1))
    b = D.tar_digest(GENERATORS[name](1))
    c = D.tar_digest(GENERATORS[name](2))
    assert a == b
    assert a[0] != c[0]


def test_mixed_set_is_the_original_benchmark_data():
    """The former bench/backup_restore.py produced this stream for 3 MB, seed 1 (fingerprints stay comparable)."""
    digest, length, stats = D.tar_digest(D.mixed_entries(3, 1))
    assert stats["total"]["bytes"] >= 3 * MB
    assert digest == MIXED_3MB_SEED1


def test_small_set_shape():
    buf = io.BytesIO()
    stats = D.write_tar(buf, D.small_entries(250, 1))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        files = [m for m in tar if m.isfile()]
    assert len(files) == 250 == stats["total"]["files"]
    assert all(512 <= m.size <= 4096 and m.uid == 1000 and m.mtime == D.MTIME for m in files)
    assert files[0].name == "files/d000/s0/f000000.log" or files[0].name.startswith("files/d000/s0/f000000.")
    assert files[-1].name.startswith("files/d000/s2/f000249.")


def test_big_set_is_mostly_large_files_of_the_requested_size():
    stats = D.write_tar(io.BytesIO(), D.big_entries(0.03, 1, file_size=4 * D.MiB, pool_size=2 * D.MiB))
    assert stats["total"]["bytes"] == 30 * MB
    assert 0.3 < stats["binary blobs"]["bytes"] / stats["total"]["bytes"] < 0.5


def test_gen_reader_reads_exact_sizes():
    r = D._GenReader(10, iter([b"abc", b"defg", b"hijklmnop"]))
    assert r.read(2) == b"ab" and r.read(5) == b"cdefg" and r.read(100) == b"hij" and r.read(1) == b""


MIXED_3MB_SEED1 = "bae907a7963ec0eb7ca0d0ead1868a15cd180e7fd8737680511afcfb03815971"


def test_method_says_how_runs_were_settled_and_where_targets_were_made():
    fair = R.method({"drop_caches": True, "target": "inside", "restore_only": True, "durable": True})
    assert "drop_caches" in fair and "inside the timed command" in fair and "restore-only" in fair
    assert "includes a `sync` after the command" in fair
    outside = R.method({"drop_caches": False, "target": "outside", "durable": False})
    assert "not dropped" in outside and "before the timer" in outside and "restore-only" not in outside
    assert "leave their writes dirty" in outside
    old = R.method({})  # results saved before these options: say what that run did
    assert "not dropped" in old and "restic, host zstd" in old and "leave their writes dirty" in old


def test_describe_restore_only_dataset():
    ds = {"stats": {"total": {"bytes": MB, "files": 3, "dirs": 1}}, "tar_bytes": MB, "rounds": 2, "warmup": True}
    assert "Median of 2 round(s) after 1 warm-up round" in R.describe_dataset(ds)
    assert "One backup per contender; restores: median of 2 round(s)" in R.describe_dataset({**ds, "restore_only": True})


def test_settle_syncs_and_drops_caches(tmp_path, monkeypatch):
    from bench import common

    drop = tmp_path / "drop_caches"
    drop.write_text("")
    monkeypatch.setattr(common, "DROP_CACHES", str(drop))
    quiet = common.settle()
    assert set(quiet) == {"sync_s", "load_before"} and drop.read_text() == ""
    dropped = common.settle(drop_caches=True)
    assert drop.read_text() == "3\n" and dropped["drop_s"] >= 0 and dropped["sync_s"] >= 0


def _fake_docker(tmp_path):
    """A `docker` on PATH that logs its arguments and answers `volume inspect` with a directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    made = tmp_path / "made-by-docker"
    made.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$2" = inspect ] && echo {made}\nexit 0\n')
    fake.chmod(0o755)
    return bin_dir, log, made


def test_host_restore_shell_creates_the_target_inside_the_timed_command(tmp_path, monkeypatch):
    import os
    import subprocess

    from bench.common import BENCH_LABEL, State
    from bench.contenders import host_restore_shell

    monkeypatch.setattr(State, "token", "abc123")
    bin_dir, log, made = _fake_docker(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    write = 'echo restored > "$MOUNT/f"'
    script, senv = host_restore_shell(write, "vol-new", None, env)
    subprocess.run(["bash", "-c", script], env=senv, check=True)
    assert (made / "f").read_text() == "restored\n"
    assert log.read_text().splitlines() == [f"volume create --label {BENCH_LABEL}=abc123 vol-new", "volume inspect -f {{.Mountpoint}} vol-new"]

    given = tmp_path / "made-before"
    given.mkdir()
    log.unlink()
    script, senv = host_restore_shell(write, "vol-old", str(given), env)
    subprocess.run(["bash", "-c", script], env=senv, check=True)
    assert (given / "f").read_text() == "restored\n" and not log.exists()  # created before the timer: no docker call


def test_durable_runs_time_the_sync_after_the_command(tmp_path, monkeypatch):
    import os

    from bench import contenders

    synced = []
    monkeypatch.setattr(contenders, "settle", lambda drop=False: {"sync_s": 0.0, "load_before": 0.5})
    monkeypatch.setattr(os, "sync", lambda: (synced.append(1), __import__("time").sleep(0.05)))
    ctx = contenders.Ctx("img", str(tmp_path))
    r = ctx.timed(["true"], rusage=False)
    assert synced and r["sync_after_s"] >= 0.05 and r["seconds"] == pytest.approx(r["command_s"] + r["sync_after_s"])
    synced.clear()
    r = contenders.Ctx("img", str(tmp_path), durable=False).timed(["true"], rusage=False)
    assert not synced and "sync_after_s" not in r and r["seconds"] == r["command_s"]


def test_foreign_removals_are_those_ending_during_the_run():
    from bench.common import foreign_removals

    events = [(9.9, "other-a"), (10.0, "other-b"), (12.0, "vsbench-abc-r1-tar-0"), (14.5, "other-c"), (15.1, "other-d")]
    assert foreign_removals(events, 10.0, 15.0, "vsbench-abc-") == ["other-b", "other-c"]
    assert foreign_removals(events, 20.0, 30.0, "vsbench-abc-") == []


def test_foreign_note_names_the_runs_a_foreign_removal_may_have_stalled():
    clean = {"round_runs": [{VS_R: {"seconds": 3.0, "foreign_removals": []}, R.RESTORE_REF: {"seconds": 2.0, "foreign_removals": []}}]}
    assert R.foreign_note(clean) == "No other client of the Docker daemon removed a volume during the 2 measured runs."
    hit = {"round_runs": [{VS_R: {"seconds": 9.5, "foreign_removals": ["big-vol"]}, R.RESTORE_REF: {"seconds": 2.0, "foreign_removals": []}}]}
    note = R.foreign_note(hit)
    assert "1 of 2 measured runs overlapped" in note and f"{VS_R} 9.50 s" in note and R.RESTORE_REF not in note and "big-vol" in note
    assert R.foreign_note({"round_runs": [{VS_R: {"seconds": 1.0}}]}) is None  # not recorded (older results)


def test_machine_cpu_counts_busy_time_not_idle_time():
    import time

    from bench.common import machine_cpu_s

    before = machine_cpu_s()
    time.sleep(0.3)  # idle: this process adds nothing
    slept = machine_cpu_s() - before
    start = time.process_time()
    before = machine_cpu_s()
    while time.process_time() - start < 0.3:  # busy: this process alone adds 0.3 CPU-s
        pass
    spun = machine_cpu_s() - before
    assert spun >= 0.25 and spun > slept
