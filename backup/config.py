"""The TOML config file: where it is found, its schema (declared once, in ``SCHEMA``), and validation.

Validation collects every problem and raises one ConfigError that lists them all, one per line,
each naming ``file:line`` where the line is known, and the table and key. Pure apart from reading
the file itself, ``*_file`` secrets and ``${ENV_VAR}`` references.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup.archive_codec import DEFAULT_LEVEL
from backup.bounds import MAX_DEPTH, data_depth_exceeds
from backup.errors import VolsafeError
from backup.naming import VOLUME_NAME
from backup.retention import RULE_NAMES, Policy
from backup.schedule import parse_duration, parse_schedule, timezone_of

ENV_VAR = "VOLSAFE_CONFIG"
LOCAL_NAME = "volsafe.toml"
MAX_CONFIG_SIZE = 1 << 20  # a config is a few KiB; a larger file is refused before it is parsed


class ConfigError(VolsafeError):
    """The config file is missing, unreadable or invalid; the message lists every problem."""

    exit_code = 2


# ---------------------------------------------------------------------------------------------
# The schema. Kinds: str, bool, int, duration (seconds: a number or "10s", "6h"), str_list,
# str_map (a table of strings), retention (an inline table of keep_* counts).


@dataclass(frozen=True)
class Key:
    """One config key: its kind, default, and what it means (shown in errors and the example)."""

    name: str
    kind: str
    help: str
    default: Any = None
    required: bool = False
    secret: bool = False  # may also be given as NAME_file (read from that file)
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    types: tuple[str, ...] = ()  # for [backends.NAME]: the backend types the key applies to


SCHEMA: dict[str, tuple[Key, ...]] = {
    "docker": (
        Key("host", "str", "Docker daemon URL, used when neither --host nor DOCKER_HOST is set"),
        Key("helper_image", "str", "helper image, used when neither --helper-image nor VOLSAFE_HELPER_IMAGE is set"),
    ),
    "scheduler": (
        Key("misfire_grace_time", "duration", "a run missed by at most this much (downtime) still runs, once", 3600.0, minimum=1),
        Key("stop_timeout", "duration", "on SIGTERM/SIGINT, how long a running backup may take to finish", 60.0, minimum=0),
    ),
    "health": (
        Key("status_file", "str", "JSON file with each job's last success and failure"),
        Key("listen", "str", "HOST:PORT for the HTTP endpoint (/health, /metrics); off when unset"),
        Key("webhook_url", "str", "URL that receives a JSON POST when a job fails", secret=True),
        Key("webhook_on_success", "bool", "also POST to webhook_url when a job succeeds", False),
        Key("webhook_timeout", "duration", "how long to wait for the webhook to answer", 10.0, minimum=0.1),
    ),
    # [backends.NAME]
    "backends": (
        Key("type", "str", "backend type", required=True, choices=("local", "s3")),
        Key("path", "str", "directory that holds the backups", types=("local",)),
        Key("bucket", "str", "bucket name", types=("s3",)),
        Key("prefix", "str", "key prefix inside the bucket", "", types=("s3",)),
        Key("region", "str", "AWS region", types=("s3",)),
        Key("endpoint_url", "str", "URL of an S3-compatible store", types=("s3",)),
        Key("access_key_id", "str", "access key id", secret=True, types=("s3",)),
        Key("secret_access_key", "str", "secret access key", secret=True, types=("s3",)),
        Key("session_token", "str", "session token of temporary credentials", secret=True, types=("s3",)),
        Key("profile", "str", "profile from the AWS shared config files", types=("s3",)),
        Key("path_style", "bool", "path-style addressing (MinIO and most self-hosted stores)", False, types=("s3",)),
        Key("storage_class", "str", "S3 storage class, e.g. STANDARD_IA", types=("s3",)),
        Key("sse", "str", "server-side encryption", choices=("AES256", "aws:kms", "aws:kms:dsse"), types=("s3",)),
        Key("sse_kms_key_id", "str", "KMS key for sse = aws:kms", types=("s3",)),
        Key("part_size", "int", "multipart upload part size in bytes (5 MiB to 5 GiB)", minimum=5 * 1024 * 1024, types=("s3",)),
        Key("concurrency", "int", "parts uploaded at once (1 to 64)", minimum=1, types=("s3",)),
    ),
    # [jobs.NAME]
    "jobs": (
        Key("volumes", "str_list", "names of the volumes to back up", ()),
        Key("volume_labels", "str_map", "back up every volume with all these labels ('' matches any value)", {}),
        Key("all_volumes", "bool", "back up every volume of the daemon", False),
        Key("projects", "str_list", "back up the volumes of these Compose projects (label com.docker.compose.project)", ()),
        Key("exclude_volumes", "str_list", "volume names (globs allowed) never backed up by this job", ()),
        Key("exclude", "str_list", "path patterns left out of every archive ('cache', '*.log', '/tmp/*', '**/node_modules')", ()),
        Key("schedule", "str", "crontab line, @hourly/@daily/@weekly/@monthly, or '@every 6h'", required=True),
        Key("timezone", "str", "IANA time zone for the schedule and retention periods [default: local]"),
        Key("jitter", "duration", "start each run up to this much later, at random", 0.0, minimum=0),
        Key("backends", "str_list", "names of [backends.*] tables to write to [default: the default directory]", ()),
        Key("stop_containers", "bool", "stop the running containers that mount a volume during its backup", False),
        Key("pause_containers", "bool", "pause those containers instead of stopping them", False),
        Key("pre_hook", "str", "command (sh -c) run in hook_container before each volume's backup"),
        Key("post_hook", "str", "command (sh -c) run in hook_container after each volume's backup, always once pre_hook ran"),
        Key("hook_container", "str", "name of the running container the hooks run in"),
        Key("hook_timeout", "duration", "how long each hook may run", 300.0, minimum=1),
        Key("hook_on_error", "str", "what a failing pre_hook does to the backup", "abort", choices=("abort", "continue")),
        Key("retention", "retention", "what to keep after each successful run; without it nothing is pruned", {}),
        Key("verify", "str", "when to verify the job's backups (a schedule, like schedule); off when unset"),
        Key("verify_restore_test", "bool", "the scheduled verify also restores each backup into a scratch volume", False),
        Key(
            "concurrency", "int",
            "volumes backed up at once (one at a time when the job stops or pauses containers or runs hooks)",
            2, minimum=1, maximum=32,
        ),
        Key("compression_level", "int", "zstd level: 1 (fastest) to 22 (smallest; above 19 needs much memory)", DEFAULT_LEVEL, minimum=1, maximum=22),
        Key("compression_threads", "int", "zstd worker threads per volume [default: one per CPU]", minimum=1, maximum=64),
    ),
    "encryption": (
        Key("recipients", "str_list", "age (age1...) or SSH public keys: backups are age-encrypted for them", ()),
        Key("recipients_files", "str_list", "files with one recipient per line, like age -R", ()),
        Key("identity_files", "str_list", "age identity files or SSH private keys that restore and verify decrypt with", ()),
        Key("passphrase_file", "str", "file whose first line is the passphrase backups are age-encrypted with, and decrypted with"),
    ),
}
NAMED_SECTIONS = ("backends", "jobs")  # tables of named tables


# ---------------------------------------------------------------------------------------------
# The validated result.


@dataclass(frozen=True)
class BackendConfig:
    """A named backend: ``type`` plus the settings its constructor takes (secrets included)."""

    name: str
    type: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class JobConfig:
    """One scheduled job."""

    name: str
    schedule: str
    volumes: tuple[str, ...] = ()
    volume_labels: dict[str, str] = field(default_factory=dict)
    all_volumes: bool = False
    projects: tuple[str, ...] = ()
    exclude_volumes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # path patterns (backup.selectors.path_excluded)
    backends: tuple[str, ...] = ()
    stop_containers: bool = False
    pause_containers: bool = False
    pre_hook: str | None = None
    post_hook: str | None = None
    hook_container: str | None = None
    hook_timeout: float = 300.0
    hook_on_error: str = "abort"
    retention: Policy = Policy()
    timezone: str | None = None
    jitter: float = 0.0
    verify: str | None = None  # schedule of the job's verification; None: never
    verify_restore_test: bool = False
    concurrency: int = 2
    compression_level: int = DEFAULT_LEVEL
    compression_threads: int | None = None  # None: one zstd worker per CPU

    def verify_trigger(self):
        """Return the APScheduler trigger of this job's verify schedule (call only if ``verify``)."""
        return parse_schedule(self.verify, self.timezone, self.jitter)

    def trigger(self, jitter: bool = True):
        """Return the APScheduler trigger of this job's schedule (``jitter=False``: for display)."""
        return parse_schedule(self.schedule, self.timezone, self.jitter if jitter else None)


@dataclass(frozen=True)
class Config:
    """The whole validated config; ``Config()`` is the built-in default."""

    path: Path | None = None
    docker_host: str | None = None
    helper_image: str | None = None
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    jobs: dict[str, JobConfig] = field(default_factory=dict)
    misfire_grace_time: float = 3600.0
    stop_timeout: float = 60.0
    status_file: Path = field(default_factory=lambda: default_status_file())
    listen: str | None = None
    webhook_url: str | None = None
    webhook_on_success: bool = False
    webhook_timeout: float = 10.0
    encryption_recipients: tuple[str, ...] = ()
    encryption_recipients_files: tuple[str, ...] = ()
    identity_files: tuple[str, ...] = ()
    passphrase_file: str | None = None  # read only when a command needs it: the secret stays out of Config


def default_status_file() -> Path:
    """Return ``$XDG_STATE_HOME/volsafe/status.json`` (``~/.local/state/volsafe/status.json``)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "volsafe" / "status.json"


# ---------------------------------------------------------------------------------------------
# Finding and loading.


def find_config(option: str | None) -> Path | None:
    """Return the config file to use: ``--config``, then $VOLSAFE_CONFIG, then ./volsafe.toml, then
    ``$XDG_CONFIG_HOME/volsafe/config.toml`` (``~/.config/…``); None when none of them exists.

    Raises ConfigError when a file named by --config or $VOLSAFE_CONFIG does not exist.
    """
    for given, how in ((option, "--config"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"config file {given} (from {how}) does not exist")
            return path
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for candidate in (Path(LOCAL_NAME), Path(config_home) / "volsafe" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(option: str | None = None) -> Config:
    """Return the validated config found as ``find_config`` says, or the defaults. Raises ConfigError."""
    path = find_config(option)
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_SIZE + 1)
        if len(raw) > MAX_CONFIG_SIZE:
            raise ConfigError(f"invalid config {path}: larger than {MAX_CONFIG_SIZE} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    config = parse_config(text, path)
    _warn_if_exposed(path, text)
    return config


_SECRET_NAMES = {k.name for keys in SCHEMA.values() for k in keys if k.secret}


def _warn_if_exposed(path: Path, text: str) -> None:
    """Log a warning if ``path`` holds a literal secret and group or others may read it."""
    try:
        exposed = path.stat().st_mode & 0o077
    except OSError:
        return
    if not exposed:
        return

    def literal_secrets(table: Any) -> bool:
        if not isinstance(table, dict):
            return False
        for name, value in table.items():
            # ${VAR} references and *_file keys keep the secret out of this file.
            if name in _SECRET_NAMES and isinstance(value, str) and value and not _ENV_REF.fullmatch(value):
                return True
            if literal_secrets(value):
                return True
        return False

    if literal_secrets(tomllib.loads(text)):
        logging.getLogger("volsafe.config").warning(
            "config file %s holds secrets and is readable by group or others: chmod 600 it", path
        )


_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def parse_config(text: str, path: Path | str = "<config>", environ: dict[str, str] | None = None) -> Config:
    """Return the Config in TOML ``text``. Raises ConfigError listing every problem found."""
    name = str(path)
    too_deep = f"invalid config {name}: tables or arrays nest more than {MAX_DEPTH} deep"
    if len(text) > MAX_CONFIG_SIZE:
        raise ConfigError(f"invalid config {name}: larger than {MAX_CONFIG_SIZE} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.match(str(exc))
        where = f"{name}:{found.group(2)}:{found.group(3)}" if found else name
        raise ConfigError(f"invalid config {name}:\n  {where}: TOML syntax error: {found.group(1) if found else exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(too_deep) from None
    if data_depth_exceeds(data):  # dotted keys and headers nest without recursion; the checks below recurse
        raise ConfigError(too_deep)
    checker = _Checker(name, _key_lines(text), os.environ if environ is None else environ)
    config = checker.check(data, Path(path) if not isinstance(path, Path) else path)
    if checker.errors:
        count = len(checker.errors)
        lines = "\n".join(f"  {e}" for e in checker.errors)
        raise ConfigError(f"invalid config {name} ({count} error{'s' if count > 1 else ''}):\n{lines}")
    return config


# ---------------------------------------------------------------------------------------------
# Line numbers: tomllib does not report where a key is, so the text is scanned for table headers
# and ``key =`` lines. Good enough for messages; multi-line strings may confuse it, never the parse.

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"""([A-Za-z0-9_\-."']+)\s*=""")


def _split_dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Return the 1-based line of each table header and key, by dotted path."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0] if '"' not in line and "'" not in line else line
        header = _HEADER.match(stripped)
        if header:
            table = _split_dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        found = _ASSIGN.findall(stripped)
        if not found or not _ASSIGN.match(stripped.strip()):
            continue
        key = table + _split_dotted(found[0])
        lines.setdefault(key, number)
        if "{" in stripped:  # inline table: its keys are on this line too
            for inner in found[1:]:
                lines.setdefault(key + _split_dotted(inner), number)
    return lines


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"


class _Checker:
    """Walks the parsed TOML against SCHEMA, collecting errors instead of stopping at the first."""

    def __init__(self, name: str, lines: dict[tuple[str, ...], int], environ):
        self.name = name
        self.lines = lines
        self.environ = environ
        self.found: list[tuple[int, str]] = []  # (line or 0, message)

    def error(self, path: tuple[str, ...], message: str) -> None:
        line = next((self.lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.lines), None)
        where = f"{self.name}:{line}" if line else self.name
        label = ".".join(path)
        self.found.append((line or 0, f"{where}: {label}: {message}" if label else f"{where}: {message}"))

    @property
    def errors(self) -> list[str]:
        """Return the messages in file order (stable for errors on one line)."""
        return [message for _, message in sorted(self.found, key=lambda f: f[0])]

    # -- top level --

    def check(self, data: dict, path: Path) -> Config:
        for section in data:
            if section not in SCHEMA:
                self.error((section,), f"unknown table{_suggest(section, list(SCHEMA))}")
            elif not isinstance(data[section], dict):
                self.error((section,), "must be a table")
        get = lambda s: data.get(s) if isinstance(data.get(s), dict) else {}  # noqa: E731
        docker = self.table(("docker",), get("docker"), SCHEMA["docker"])
        scheduler = self.table(("scheduler",), get("scheduler"), SCHEMA["scheduler"])
        health = self.table(("health",), get("health"), SCHEMA["health"])
        encryption = self.table(("encryption",), get("encryption"), SCHEMA["encryption"])
        if health.get("listen"):
            self.check_listen(("health", "listen"), health["listen"])
        backends = {}
        for name, raw in self.named(("backends",), get("backends")):
            backends[name] = self.backend(name, raw)
        jobs = {}
        for name, raw in self.named(("jobs",), get("jobs")):
            job = self.job(name, raw, backends)
            if job is not None:
                jobs[name] = job
        return Config(
            path=path,
            docker_host=docker.get("host"),
            helper_image=docker.get("helper_image"),
            backends={n: b for n, b in backends.items() if b is not None},
            jobs=jobs,
            misfire_grace_time=scheduler["misfire_grace_time"],
            stop_timeout=scheduler["stop_timeout"],
            status_file=Path(health["status_file"]).expanduser() if health.get("status_file") else default_status_file(),
            listen=health.get("listen"),
            webhook_url=health.get("webhook_url"),
            webhook_on_success=health["webhook_on_success"],
            webhook_timeout=health["webhook_timeout"],
            encryption_recipients=tuple(encryption["recipients"] or ()),
            encryption_recipients_files=tuple(encryption["recipients_files"] or ()),
            identity_files=tuple(encryption["identity_files"] or ()),
            passphrase_file=encryption.get("passphrase_file") or None,
        )

    def named(self, path: tuple[str, ...], tables: dict):
        """Yield (name, table) for each ``[SECTION.NAME]``; names must be simple identifiers."""
        for name, raw in tables.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                self.error(path + (name,), "names use letters, digits, '_', '.' and '-'")
            elif not isinstance(raw, dict):
                self.error(path + (name,), f"must be a table: [{path[0]}.{name}]")
            else:
                yield name, raw

    # -- one table against its keys --

    def table(self, path: tuple[str, ...], raw: dict, keys: tuple[Key, ...], allowed: set[str] | None = None) -> dict:
        """Return {key: value} for ``raw`` with defaults filled in; record errors for the rest."""
        by_name = {k.name: k for k in keys}
        known = [k.name for k in keys if allowed is None or k.name in allowed]
        known += [f"{k.name}_file" for k in keys if k.secret and k.name in known]
        values: dict[str, Any] = {}
        for name, value in raw.items():
            base = name[: -len("_file")] if name.endswith("_file") and name[: -len("_file")] in by_name else name
            key = by_name.get(base)
            if key is None or base not in known or (base != name and not key.secret):
                if key is not None and base in by_name and allowed is not None and base not in allowed:
                    self.error(path + (name,), f"does not apply to this backend type (it is for type {' or '.join(key.types)})")
                else:
                    self.error(path + (name,), f"unknown key{_suggest(name, known)}")
                continue
            if base != name:
                if base in raw:
                    self.error(path + (name,), f"give {base} or {name}, not both")
                    continue
                value = self.read_secret(path + (name,), value)
                if value is None:
                    continue
            checked = self.value(path + (base,), key, value)
            if checked is not None:
                values[base] = checked
        for key in keys:
            if key.name not in values and (allowed is None or key.name in allowed):
                if key.required and key.name not in raw and f"{key.name}_file" not in raw:
                    self.error(path, f"missing required key {key.name!r} ({key.help})")
                values.setdefault(key.name, key.default)
        return values

    def read_secret(self, path: tuple[str, ...], value: Any) -> str | None:
        if not isinstance(value, str):
            self.error(path, "must be a file name (a string)")
            return None
        try:
            return Path(self.expand(path, value) or "").expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(path, f"cannot read secret file {value!r}: {getattr(exc, 'strerror', None) or exc}")
            return None

    def expand(self, path: tuple[str, ...], text: str) -> str | None:
        """Return ``text`` with ``${VAR}`` replaced from the environment; None (and an error) if unset."""
        missing = [m for m in _ENV_REF.findall(text) if m not in self.environ]
        if missing:
            self.error(path, f"environment variable {missing[0]} is not set")
            return None
        return _ENV_REF.sub(lambda m: self.environ[m.group(1)], text)

    def value(self, path: tuple[str, ...], key: Key, value: Any) -> Any:
        """Return ``value`` converted to ``key``'s kind, or None after recording an error."""
        kind = key.kind
        if kind == "str":
            if not isinstance(value, str):
                return self.error(path, f"must be a string, not {_toml_type(value)}")
            value = self.expand(path, value)
            if value is not None and key.choices and value not in key.choices:
                return self.error(path, f"must be one of {', '.join(key.choices)}, not {value!r}{_suggest(value, list(key.choices)) if difflib.get_close_matches(value, key.choices, n=1) else ''}")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                return self.error(path, f"must be true or false, not {_toml_type(value)}")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return self.error(path, f"must be a whole number, not {_toml_type(value)}")
            if key.minimum is not None and value < key.minimum:
                return self.error(path, f"must be at least {key.minimum:g}, not {value}")
            if key.maximum is not None and value > key.maximum:
                return self.error(path, f"must be at most {key.maximum:g}, not {value}")
            return value
        if kind == "duration":
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                return self.error(path, str(exc))
            if key.minimum is not None and seconds < key.minimum:
                return self.error(path, f"must be at least {key.minimum:g}s")
            return seconds
        if kind == "str_list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return self.error(path, "must be a list of strings, e.g. [\"a\", \"b\"]")
            expanded = [self.expand(path, v) for v in value]
            return None if None in expanded else tuple(expanded)
        if kind == "str_map":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                return self.error(path, "must be a table of strings, e.g. { app = \"db\" }")
            return dict(value)
        if kind == "retention":
            return self.retention(path, value)
        raise AssertionError(f"unknown kind {kind}")

    def retention(self, path: tuple[str, ...], value: Any) -> Policy | None:
        if not isinstance(value, dict):
            return self.error(path, "must be a table, e.g. { keep_last = 7, keep_daily = 14 }")
        counts = {}
        for name, count in value.items():
            if name not in RULE_NAMES:
                self.error(path + (name,), f"unknown retention rule{_suggest(name, list(RULE_NAMES))}")
            elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
                self.error(path + (name,), f"must be a whole number >= 0, not {count!r}")
            else:
                counts[name] = count
        return Policy(**counts)

    def check_listen(self, path: tuple[str, ...], value: str) -> None:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            self.error(path, f"must be HOST:PORT, e.g. 127.0.0.1:9180, not {value!r}")

    # -- named tables --

    def backend(self, name: str, raw: dict) -> BackendConfig | None:
        path = ("backends", name)
        kind = raw.get("type")
        if kind not in ("local", "s3"):
            # Check the keys anyway so that every error shows up at once.
            self.table(path, raw, SCHEMA["backends"])
            return None
        allowed = {k.name for k in SCHEMA["backends"] if not k.types or kind in k.types}
        values = self.table(path, raw, SCHEMA["backends"], allowed)
        if kind == "local":
            if not values.get("path") and "path" not in raw:
                self.error(path, "missing required key 'path' (directory that holds the backups)")
                return None
            return BackendConfig(name, kind, {"path": values.get("path")})
        if not values.get("bucket") and "bucket" not in raw:
            self.error(path, "missing required key 'bucket' (bucket name)")
            return None
        if bool(values.get("access_key_id")) != bool(values.get("secret_access_key")):
            self.error(path, "give both access_key_id and secret_access_key, or neither")
        settings = {k: v for k, v in values.items() if k != "type" and v is not None and (v != "" or k == "prefix")}
        if settings.get("path_style") is False:
            settings.pop("path_style")
        return BackendConfig(name, kind, settings)

    def job(self, name: str, raw: dict, backends: dict) -> JobConfig | None:
        path = ("jobs", name)
        before = len(self.found)
        values = self.table(path, raw, SCHEMA["jobs"])
        for volume in values.get("volumes") or ():
            if not VOLUME_NAME.match(volume):
                self.error(path + ("volumes",), f"invalid volume name {volume!r}")
        selects = ("volumes", "volume_labels", "all_volumes", "projects")
        if not any(values.get(k) for k in selects) and "volumes" not in raw and "volume_labels" not in raw:
            self.error(path, "give volumes, volume_labels, projects or all_volumes: the job has nothing to back up")
        for pattern in values.get("exclude") or ():
            if not pattern.strip() or pattern.strip().strip("/") in ("", ".") or ".." in pattern.split("/"):
                self.error(path + ("exclude",), f"invalid exclude pattern {pattern!r}")
        for backend in values.get("backends") or ():
            if backend not in backends:
                known = list(backends)
                hint = _suggest(backend, known) if known else " (no [backends.*] tables are defined)"
                self.error(path + ("backends",), f"unknown backend {backend!r}{hint}")
        zone = values.get("timezone")
        if zone:
            try:
                timezone_of(zone)
            except ValueError as exc:
                self.error(path + ("timezone",), str(exc))
                zone = None
        if values.get("schedule"):
            try:
                parse_schedule(values["schedule"], zone, values.get("jitter"))
            except ValueError as exc:
                self.error(path + ("schedule",), str(exc))
        if values.get("stop_containers") and values.get("pause_containers"):
            self.error(path + ("pause_containers",), "give stop_containers or pause_containers, not both")
        if (values.get("pre_hook") or values.get("post_hook")) and not values.get("hook_container"):
            self.error(path, "pre_hook and post_hook need hook_container (the container they run in)")
        if values.get("verify"):
            try:
                parse_schedule(values["verify"], zone, values.get("jitter"))
            except ValueError as exc:
                self.error(path + ("verify",), str(exc))
        if len(self.found) != before or not values.get("schedule"):
            return None
        return JobConfig(
            name=name,
            schedule=values["schedule"],
            volumes=tuple(values["volumes"] or ()),
            volume_labels=dict(values["volume_labels"] or {}),
            all_volumes=bool(values["all_volumes"]),
            projects=tuple(values["projects"] or ()),
            exclude_volumes=tuple(values["exclude_volumes"] or ()),
            exclude=tuple(values["exclude"] or ()),
            backends=tuple(values["backends"] or ()),
            stop_containers=values["stop_containers"],
            pause_containers=values["pause_containers"],
            pre_hook=values.get("pre_hook") or None,
            post_hook=values.get("post_hook") or None,
            hook_container=values.get("hook_container") or None,
            hook_timeout=values["hook_timeout"],
            hook_on_error=values["hook_on_error"],
            retention=values["retention"] if isinstance(values["retention"], Policy) else Policy(),
            timezone=values.get("timezone"),
            jitter=values["jitter"] or 0.0,
            verify=values.get("verify") or None,
            verify_restore_test=values["verify_restore_test"],
            concurrency=values["concurrency"],
            compression_level=values["compression_level"],
            compression_threads=values.get("compression_threads"),
        )


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)
