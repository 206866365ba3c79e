"""Pure reporting: medians, ratios, the markdown table, the issue's targets, and the PNG chart.

Everything here works on plain dicts (as stored in ``bench/out/results.json``), so it can be
re-run on saved results: ``python3 bench/run.py --report-only``.
"""

from __future__ import annotations

import statistics

MB = 1_000_000
BACKUP_REF = "host tar | zstd -T0 -3"
RESTORE_REF = "recipe tar -xf"
FLOOR_BACKUP = "recipe tar -cf"
GZIP_BACKUP = "recipe tar -czf"
RESTIC_RESTORE = "restic restore"


def median(xs):
    """Median of the values that are not None; None if there are none."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    """a / b, or None if either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarize(rounds: list[dict[str, dict]], order: list[tuple[str, str]], tar_bytes: int) -> list[dict]:
    """One row per (operation, contender name) in ``order``, with medians over ``rounds``.

    ``rounds`` is a list of {contender name: run dict}; a run dict has ``seconds`` and optionally
    ``stored_size``, ``peak_rss_mb``, ``cpu_user_s``, ``cpu_sys_s``. ``ratio`` is the median time
    relative to the reference row of the same operation (backup: host tar|zstd; restore: recipe tar -xf).
    """
    rows = []
    for op, name in order:
        runs = [r[name] for r in rounds if name in r]
        if not runs:
            continue
        secs = [x["seconds"] for x in runs]
        med = median(secs)
        rss = [x.get("peak_rss_mb") for x in runs if x.get("peak_rss_mb") is not None]
        cpu = [(x.get("cpu_user_s") or 0) + (x.get("cpu_sys_s") or 0) for x in runs if x.get("cpu_user_s") is not None]
        machine = [x["machine_cpu_s"] for x in runs if x.get("machine_cpu_s") is not None]
        commands = [x.get("command_s", x["seconds"]) for x in runs if x.get("machine_cpu_s") is not None]
        stored = runs[0].get("stored_size")
        rows.append(
            {
                "op": op,
                "name": name,
                "median_s": med,
                "min_s": min(secs),
                "max_s": max(secs),
                "runs_s": secs,
                "mb_per_s": ratio(tar_bytes / MB, med),
                "stored_size": stored,
                "stored_pct": None if stored is None else 100 * stored / tar_bytes,
                "peak_rss_mb": max(rss) if rss else None,
                "cpu_s": median(cpu),
                # the whole machine's busy CPU during the command (helper containers and dockerd
                # included), and how many of its cores that kept busy on average
                "machine_cpu_s": median(machine),
                "cores": median([m / c for m, c in zip(machine, commands, strict=True) if c > 0]),
            }
        )
    for row in rows:
        ref = BACKUP_REF if row["op"] == "backup" else RESTORE_REF
        ref_row = find(rows, row["op"], ref)
        row["ratio"] = ratio(row["median_s"], ref_row["median_s"]) if ref_row else None
    return rows


def find(rows: list[dict], op: str, name: str) -> dict | None:
    for r in rows:
        if r["op"] == op and r["name"] == name:
            return r
    return None


def cell(text: str) -> str:
    """Escape a markdown table cell (contender names contain pipes)."""
    return str(text).replace("|", "\\|")


def _f(x, fmt="{:.2f}"):
    return "–" if x is None else fmt.format(x)


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| operation | contender | median s | min–max s | MB/s | stored MB | stored % of tar | ratio | peak RSS MB | CPU s | machine CPU s | cores busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = r["name"] in (BACKUP_REF, RESTORE_REF)
        lines.append(
            f"| {r['op']} | {cell(r['name'])} | {_f(r['median_s'])} | {_f(r['min_s'])}–{_f(r['max_s'])} | "
            f"{_f(r['mb_per_s'], '{:.0f}')} | {_f(None if r['stored_size'] is None else r['stored_size'] / MB, '{:.1f}')} | "
            f"{_f(r['stored_pct'], '{:.1f}')} | {'1.00 (ref)' if ref else _f(r.get('ratio'))} | "
            f"{_f(r['peak_rss_mb'], '{:.0f}')} | {_f(r['cpu_s'], '{:.1f}')} | {_f(r.get('machine_cpu_s'), '{:.1f}')} | "
            f"{_f(r.get('cores'))} |"
        )
    return lines


def _time_target(what, rows, op, name, ref_name, limit):
    a, b = find(rows, op, name), find(rows, op, ref_name)
    if not a or not b:
        return {"target": what, "measured": f"not measured (needs {name} and {ref_name})", "ok": None}
    q = a["median_s"] / b["median_s"]
    return {"target": what, "measured": f"{a['median_s']:.2f} s vs {b['median_s']:.2f} s = {q:.2f}x", "ok": q <= limit}


def check_targets(results: dict[str, list[dict]], vs_backup: str, vs_restore: str) -> list[dict]:
    """The issue's targets, from the summary rows per data set. ``ok`` is True, False or None (not measured).

    ``vs_backup``/``vs_restore`` name the volsafe rows the targets apply to (local, default level).
    """
    out = []
    mixed, small, big = results.get("mixed"), results.get("small"), results.get("big")

    def tag(ds, t):
        t["dataset"] = ds
        return t

    if mixed is not None:
        out.append(tag("mixed", _time_target(f"backup within 1.2x of `{BACKUP_REF}`", mixed, "backup", vs_backup, BACKUP_REF, 1.2)))  # issue 19: 2 cores
        a, g = find(mixed, "backup", vs_backup), find(mixed, "backup", GZIP_BACKUP)
        if a and g:
            q = g["median_s"] / a["median_s"]
            out.append(
                tag(
                    "mixed",
                    {
                        "target": "backup at least 5x faster than `tar -czf`",
                        "measured": f"{g['median_s']:.2f} s / {a['median_s']:.2f} s = {q:.1f}x",
                        "ok": q >= 5,
                    },
                )
            )
            out.append(
                tag(
                    "mixed",
                    {
                        "target": "stored size within 1.02x of gzip -6 (`tar -czf`)",  # issue 19's decision
                        "measured": f"{a['stored_size'] / MB:.2f} MB vs {g['stored_size'] / MB:.2f} MB "
                        f"({100 * a['stored_size'] / g['stored_size']:.1f}%)",
                        "ok": a["stored_size"] <= 1.02 * g["stored_size"],
                    },
                )
            )
        else:
            out.append(
                tag(
                    "mixed",
                    {
                        "target": "backup at least 5x faster than `tar -czf`; stored size <= gzip's",
                        "measured": "not measured (needs tgz)",
                        "ok": None,
                    },
                )
            )
    if big is not None:
        out.append(tag("big", _time_target(f"backup within 1.15x of `{BACKUP_REF}`", big, "backup", vs_backup, BACKUP_REF, 1.15)))
    if small is not None:
        out.append(tag("small", _time_target(f"backup within 1.2x of the floor `{FLOOR_BACKUP}`", small, "backup", vs_backup, FLOOR_BACKUP, 1.2)))
    for ds, rows in (("mixed", mixed), ("small", small)):  # issue 19: restore <= 1.1x the recipe's tar -x, <= 1.0x restic restore
        if rows is not None:
            out.append(tag(ds, _time_target(f"restore within 1.1x of `{RESTORE_REF}`", rows, "restore", vs_restore, RESTORE_REF, 1.1)))
            out.append(tag(ds, _time_target(f"restore no slower than `{RESTIC_RESTORE}`", rows, "restore", vs_restore, RESTIC_RESTORE, 1.0)))
    rss = {
        ds: max((r["peak_rss_mb"] for r in rows if r["name"] in (vs_backup, vs_restore) and r["peak_rss_mb"] is not None), default=None)
        for ds, rows in results.items()
    }
    flat = ", ".join(f"{ds} {v:.0f} MB" for ds, v in rss.items() if v is not None)
    if big is not None and rss.get("big") is not None:
        out.append(
            tag(
                "big",
                {
                    "target": "volsafe peak RSS under 150 MB (backup and restore)",
                    "measured": f"{rss['big']:.0f} MB (per data set: {flat})",
                    "ok": rss["big"] < 150,
                },
            )
        )
    else:
        out.append(
            tag(
                "big",
                {
                    "target": "volsafe peak RSS under 150 MB on the big volume",
                    "measured": f"not measured (big set not run; per data set: {flat or '–'})",
                    "ok": None,
                },
            )
        )
    return out


def target_lines(targets: list[dict]) -> list[str]:
    lines = ["| data set | target | measured | met |", "|---|---|---|---|"]
    for t in targets:
        met = "–" if t["ok"] is None else ("yes" if t["ok"] else "**no**")
        lines.append(f"| {t['dataset']} | {cell(t['target'])} | {cell(t['measured'])} | {met} |")
    met = sum(1 for t in targets if t["ok"])
    missed = [t for t in targets if t["ok"] is False]
    lines += [
        "",
        f"Targets met: {met} of {sum(1 for t in targets if t['ok'] is not None)} measured"
        + (("; missed: " + "; ".join(f"{t['dataset']}: {t['target']} ({t['measured']})" for t in missed)) if missed else "")
        + ".",
    ]
    return lines


def describe_dataset(ds: dict) -> str:
    stats = ds["stats"]
    parts = ", ".join(f"{k} {v['bytes'] / MB:.0f} MB / {v['files']} files" for k, v in stats.items() if k != "total")
    return (
        f"{ds['tar_bytes'] / MB:.0f} MB as tar ({stats['total']['files']} files, {stats['total']['dirs']} dirs): "
        f"{parts}. "
        + ("One backup per contender; restores: median" if ds.get("restore_only") else "Median")
        + f" of {ds['rounds']} round(s)"
        + (" after 1 warm-up round" if ds.get("warmup") else " (no warm-up)")
        + "."
    )


def foreign_note(ds: dict) -> str | None:
    """A line naming the measured runs during which another client of the Docker daemon finished
    removing a volume (which blocks volume calls until done), or None if there were none or it was
    not recorded."""
    runs = [(name, r) for rnd in ds.get("round_runs", []) for name, r in rnd.items() if "foreign_removals" in r]
    if not runs:
        return None
    hit = [(name, r) for name, r in runs if r["foreign_removals"]]
    if not hit:
        return f"No other client of the Docker daemon removed a volume during the {len(runs)} measured runs."
    names = sorted({v for _, r in hit for v in r["foreign_removals"]})
    per = ", ".join(f"{name} {r['seconds']:.2f} s" for name, r in hit)
    return (
        f"**{len(hit)} of {len(runs)} measured runs overlapped another client's volume removal** on the Docker daemon "
        f"({len(names)} volume(s), e.g. {names[0]}), which blocks volume calls until it is done: {per}."
    )


def method(meta: dict) -> str:
    """How the runs were settled and where the restore targets were made, from the run's options
    (results saved before these options existed: sync only, targets made the old way)."""
    settle = (
        "`sync` then `echo 3 > /proc/sys/vm/drop_caches` (untimed) before each run, so every run reads its input cold"
        if meta.get("drop_caches")
        else "`sync` (untimed) before each run, page caches not dropped"
    )
    target = meta.get("target")
    if target == "inside":
        where = "every restore creates its fresh target volume inside the timed command"
    elif target == "outside":
        where = "every restore's fresh target volume is created before the timer starts (volsafe checks it is empty)"
    else:
        where = "the host-side restores (restic, host zstd) created their target volume before the timer, volsafe and the recipe inside it"
    if meta.get("durable"):
        settle += "; each time includes a `sync` after the command, so every contender's writes are on disk"
    else:
        settle += "; times stop when the command exits (restic and host zstd leave their writes dirty in the page cache)"
    return f"{settle}; {where}" + ("; restore-only run (one backup per contender, its restore timed each round)" if meta.get("restore_only") else "")


def markdown(meta: dict, datasets: dict[str, dict], targets: list[dict]) -> str:
    loads = meta.get("loads") or []
    lines = [
        "# volsafe backup/restore benchmark",
        "",
        f"{meta['date']} · volsafe {meta['volsafe_version']} at {meta['git']} · Docker {meta['docker_version']} · "
        f"{meta['cpus']} CPUs · Python {meta['python']} · helper image `{meta['image']}` · seed {meta['seed']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Contenders interleaved within each round (the order rotates by one each round), "
        + method(meta)
        + ". Medians of the measured rounds. MB = 10^6 bytes; MB/s = the volume's tar size / median wall time "
        "(host-side, including container start-up and CLI start-up). Ratio: backups relative to "
        f"`{BACKUP_REF}` (no Docker, the machine's limit), restores relative to `{RESTORE_REF}` (the Docker-docs "
        "recipe). Peak RSS and CPU are measured for host-side commands only (volsafe, restic, host tar|zstd); "
        "for the `docker run` recipes they would only measure the docker CLI.",
    ]
    for name, ds in datasets.items():
        lines += ["", f"## {name}", "", describe_dataset(ds), ""]
        lines += table(ds["summary"])
        if ds.get("verified"):
            lines += [
                "",
                "Warm-up restores checked against the source"
                + (
                    " (sampled: every file's size/owner/mode/mtime, every 4th file's content)"
                    if ds.get("sampled")
                    else " (content, size, owner, mode, mtime of every file; entry count)"
                )
                + ": "
                + ", ".join(f"{k}: {'ok' if v else 'MISMATCH'}" for k, v in ds["verified"].items())
                + ".",
            ]
        note = foreign_note(ds)
        if note:
            lines += ["", note]
    lines += ["", "## Targets (issues 8 and 19)", ""] + target_lines(targets)
    if loads:
        lines += [
            "",
            f"1-minute load average before the measured runs: median {statistics.median(loads):.1f}, "
            f"max {max(loads):.1f} on {meta['cpus']} CPUs"
            + (" (the machine was busy with other work: times are inflated and scattered)" if max(loads) > 0.75 * (meta["cpus"] or 1) else "")
            + ".",
        ]
    lines += [
        "",
        "Notes: volsafe fsyncs the archive before it lists the backup; the recipes and the host pipeline do "
        "not. The S3 rows run against moto "
        "on 127.0.0.1 (objects in Python memory/temp files): they test the streaming path, not S3's speed.",
        "",
    ]
    return "\n".join(lines)


def chart(path: str, datasets: dict[str, dict], title: str = "") -> None:
    """A PNG with one panel per data set: median wall time per contender, backups and restores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(datasets)
    n_rows = max(len(ds["summary"]) for ds in datasets.values())
    fig, axes = plt.subplots(1, len(names), figsize=(6.2 * len(names), 0.42 * n_rows + 1.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = datasets[name]["summary"]
        labels = [f"{r['op']}: {r['name']}" for r in rows][::-1]
        vals = [r["median_s"] for r in rows][::-1]
        colors = []
        for r in rows[::-1]:
            vs = r["name"].startswith("volsafe")
            colors.append(("#1f77b4" if vs else "#9ecae1") if r["op"] == "backup" else ("#d62728" if vs else "#fcae91"))
        bars = ax.barh(range(len(vals)), vals, color=colors)
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        for b, r in zip(bars, rows[::-1], strict=True):
            extra = f"  {r['median_s']:.1f} s"
            if r.get("peak_rss_mb") is not None and r["name"].startswith("volsafe"):
                extra += f", {r['peak_rss_mb']:.0f} MB RSS"
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, extra, va="center", fontsize=7)
        ax.set_xlabel("median wall time, s (lower is better)")
        ax.set_title(f"{name}: {datasets[name]['tar_bytes'] / MB:.0f} MB, {datasets[name]['stats']['total']['files']} files", fontsize=10)
        ax.set_xlim(0, max(vals) * 1.35 if vals else 1)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
