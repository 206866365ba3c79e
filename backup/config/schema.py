"""The TOML config file: where it is found, its schema, and validation.

Each key is declared once, with its converter, default and help: the keys of ``[docker]``,
``[scheduler]``, ``[health]`` and ``[encryption]`` as fields of ``Config``, those of ``[jobs.NAME]``
as fields of ``JobConfig`` (``key(...)``), and those of ``[backends.NAME]`` by each backend type in
``storage_backends.registry``. ``SCHEMA`` lists them by table.

Validation collects every problem and raises one ConfigError that lists them all, one per line,
each naming ``file:line`` where the line is known, and the table and key. Pure apart from reading
the file itself, ``*_file`` secrets and ``${ENV_VAR}`` references.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from backup.archive.codec import DEFAULT_LEVEL
from backup.config.converters import (
    FILE_PATH,
    OPTIONAL_TEXT,
    STR_LIST,
    BackendTypeName,
    Duration,
    HostPort,
    OptionalText,
    Retention,
    StrList,
    StrMap,
    TimeZone,
    exclude_pattern,
    known_or_listed,
    volume_name,
)
from backup.archive.hosts import validate_host_name
from backup.config.files import ConfigError, find_config
from backup.bounds import MAX_DEPTH, data_depth_exceeds
from backup.jobs.retention import Policy
from backup.jobs.schedule import parse_schedule
from backup.quiesce.hooks import DEFAULT_TIMEOUT as DEFAULT_HOOK_TIMEOUT, ON_ERROR as HOOK_ON_ERROR
from storage_backends.registry import BackendType, backend_type, backend_types
from storage_backends.settings import FLAG, TEXT, Invalid, Setting, Text, WholeNumber

MAX_CONFIG_SIZE = 1 << 20  # a config is a few KiB; a larger file is refused before it is parsed


# ---------------------------------------------------------------------------------------------
# Declaring keys. A config key is a Setting (as a backend's settings are): name, converter (see
# backup.config.converters), default, help (shown in errors), required, secret.

Key = Setting
_KEY = "volsafe.key"  # the dataclass field metadata that holds a key's declaration


@dataclass(frozen=True)
class _Declared:
    convert: Callable[..., Any]
    help: str
    section: str | None
    name: str | None
    required: bool
    secret: bool


def key(
    convert: Callable[..., Any],
    help: str,
    default: Any = None,
    *,
    factory: Callable[[], Any] | None = None,
    section: str | None = None,
    name: str | None = None,
    required: bool = False,
    secret: bool = False,
) -> Any:
    """Return a dataclass field that declares a config key; the field's default is the key's.

    The key is named like the field unless ``name`` is given; ``section`` is its table (for the
    fields of Config). ``factory`` makes a default that must not be shared (a dict) or that is
    computed when the object is made. ``secret``: may also be given as NAME_file.
    """
    declared = {_KEY: _Declared(convert, help, section, name, required, secret)}
    if factory is not None:
        return field(default_factory=factory, metadata=declared)
    return field(default=default, metadata=declared)


def keys_of(cls: type, section: str | None = None) -> tuple[Key, ...]:
    """Return the keys the fields of dataclass ``cls`` declare (those of ``section``)."""
    keys = []
    for f in fields(cls):
        declared = f.metadata.get(_KEY)
        if declared is not None and declared.section == section:
            default = None if f.default is MISSING else f.default  # a factory's default is computed later
            keys.append(Key(declared.name or f.name, declared.convert, declared.help, default, declared.required, declared.secret))
    return tuple(keys)


def key_values(obj: Any, section: str | None = None) -> list[tuple[str, Any, bool]]:
    """Return (key name, value, is default) for each key the fields of dataclass ``obj`` declare
    (those of ``section``), in declaration order: what a config sets, read back."""
    values = []
    for f in fields(obj):
        declared = f.metadata.get(_KEY)
        if declared is not None and declared.section == section:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            value = getattr(obj, f.name)
            values.append((declared.name or f.name, value, value == default))
    return values


def _field_names(cls: type) -> dict[tuple[str | None, str], str]:
    """Return {(section, key name): field name} for the keys of dataclass ``cls``."""
    names = {}
    for f in fields(cls):
        declared = f.metadata.get(_KEY)
        if declared is not None:
            names[(declared.section, declared.name or f.name)] = f.name
    return names


# ---------------------------------------------------------------------------------------------
# The validated result, and the keys it comes from.


@dataclass(frozen=True)
class BackendConfig:
    """A named backend: ``type`` plus the settings its constructor takes (secrets included).

    ``settings`` holds every setting the type declares, given or defaulted, except unset ones."""

    name: str
    type: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class JobConfig:
    """One scheduled job: [jobs.NAME]."""

    name: str
    schedule: str = key(TEXT, "crontab line, @hourly/@daily/@weekly/@monthly, or '@every 6h'", required=True)
    volumes: tuple[str, ...] = key(StrList(volume_name), "names of the volumes to back up", ())
    volume_labels: dict[str, str] = key(
        StrMap(), "back up every volume with all these labels ('' matches any value)", factory=dict
    )
    all_volumes: bool = key(FLAG, "back up every volume of the daemon", False)
    projects: tuple[str, ...] = key(
        STR_LIST, "back up the volumes of these Compose projects (label com.docker.compose.project)", ()
    )
    exclude_volumes: tuple[str, ...] = key(STR_LIST, "volume names (globs allowed) never backed up by this job", ())
    exclude: tuple[str, ...] = key(  # path patterns (backup.selectors.path_excluded)
        StrList(exclude_pattern), "path patterns left out of every archive ('cache', '*.log', '/tmp/*', '**/node_modules')", ()
    )
    backends: tuple[str, ...] = key(STR_LIST, "names of [backends.*] tables to write to [default: the default directory]", ())
    stop_containers: bool = key(FLAG, "stop the running containers that mount a volume during its backup", False)
    pause_containers: bool = key(FLAG, "pause those containers instead of stopping them", False)
    quiesce_each: bool = key(
        FLAG, "stop or pause (and run hooks) around each volume's backup, instead of once for the whole run", False
    )
    pre_hook: str | None = key(
        OPTIONAL_TEXT, "command (sh -c) run in hook_container before the run's backup (each volume's with quiesce_each)"
    )
    post_hook: str | None = key(
        OPTIONAL_TEXT, "command (sh -c) run in hook_container after the run's backup, always once pre_hook ran"
    )
    hook_container: str | None = key(OPTIONAL_TEXT, "name of the running container the hooks run in")
    hook_timeout: float = key(Duration(minimum=1), "how long each hook may run", DEFAULT_HOOK_TIMEOUT)
    hook_on_error: str = key(Text(HOOK_ON_ERROR), "what a failing pre_hook does to the backup", HOOK_ON_ERROR[0])
    retention: Policy = key(Retention(), "what to keep after each successful run; without it nothing is pruned", Policy())
    timezone: str | None = key(TimeZone(), "IANA time zone for the schedule and retention periods [default: local]")
    jitter: float = key(Duration(minimum=0), "start each run up to this much later, at random", 0.0)
    verify: str | None = key(  # schedule of the job's verification; None: never
        OPTIONAL_TEXT, "when to verify the job's backups (a schedule, like schedule); off when unset"
    )
    verify_restore_test: bool = key(FLAG, "the scheduled verify also restores each backup into a scratch volume", False)
    concurrency: int = key(
        WholeNumber(1, 32),
        "volumes backed up at once (one at a time with quiesce_each when the job stops or pauses containers or runs hooks)",
        2,
    )
    compression_level: int = key(
        WholeNumber(1, 22), "zstd level: 1 (fastest) to 22 (smallest; above 19 needs much memory)", DEFAULT_LEVEL
    )
    compression_threads: int | None = key(  # None: one zstd worker per CPU
        WholeNumber(1, 64), "zstd worker threads per volume [default: one per CPU]"
    )

    def verify_trigger(self):
        """Return the APScheduler trigger of this job's verify schedule (call only if ``verify``)."""
        assert self.verify is not None  # called only if verify
        return parse_schedule(self.verify, self.timezone, self.jitter)

    def trigger(self, jitter: bool = True):
        """Return the APScheduler trigger of this job's schedule (``jitter=False``: for display)."""
        return parse_schedule(self.schedule, self.timezone, self.jitter if jitter else None)


NOTIFY_EVENTS = ("failure", "verify_failure", "stale", "success")


def _notify_event(name: str) -> None:
    if name not in NOTIFY_EVENTS:
        raise ValueError(f"unknown event {name!r} (events: {', '.join(NOTIFY_EVENTS)})")


def _apprise_url(url: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) or not rest:
        raise ValueError(f"not an apprise URL (SCHEME://...): {url.split('://')[0]!r}...")


@dataclass(frozen=True)
class NotifyConfig:
    """One notification route: [notify.NAME]. apprise sends each event it takes to each of its URLs."""

    name: str
    urls: tuple[str, ...] = key(
        StrList(_apprise_url),
        "apprise URLs (mailto://, slack://, discord://, tgram://, ntfy://, gotify://, json://, ...); use ${VAR} for tokens",
        required=True,
    )
    events: tuple[str, ...] = key(
        StrList(_notify_event), f"events sent here: {', '.join(NOTIFY_EVENTS)}", ("failure", "verify_failure", "stale")
    )
    jobs: tuple[str, ...] = key(STR_LIST, "only the events of these jobs (stale is no job's: always sent) [default: every job's]", ())


@dataclass(frozen=True)
class Config:
    """The whole validated config; ``Config()`` is the built-in default."""

    path: Path | None = None
    docker_host: str | None = key(
        TEXT, "Docker daemon URL, used when neither --host nor DOCKER_HOST is set", section="docker", name="host"
    )
    helper_image: str | None = key(
        TEXT, "helper image, used when neither --helper-image nor VOLSAFE_HELPER_IMAGE is set", section="docker"
    )
    host_name: str | None = key(
        OptionalText(validate_host_name),
        "name this host's backups are recorded under, used when VOLSAFE_HOST_NAME is not set [default: the Docker daemon's Name]",
        section="docker",
    )
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    jobs: dict[str, JobConfig] = field(default_factory=dict)
    notify: dict[str, NotifyConfig] = field(default_factory=dict)
    misfire_grace_time: float = key(
        Duration(minimum=1), "a run missed by at most this much (downtime) still runs, once", 3600.0, section="scheduler"
    )
    stop_timeout: float = key(
        Duration(minimum=0), "on SIGTERM/SIGINT, how long a running backup may take to finish", 60.0, section="scheduler"
    )
    status_file: Path = key(
        FILE_PATH, "JSON file with each job's last success and failure", factory=lambda: default_status_file(), section="health"
    )
    listen: str | None = key(HostPort(), "HOST:PORT for the HTTP endpoint (/health, /metrics); ':PORT' is 127.0.0.1 only; off when unset", section="health")
    webhook_url: str | None = key(TEXT, "URL that receives a JSON POST when a job fails", section="health", secret=True)
    webhook_on_success: bool = key(FLAG, "also POST to webhook_url when a job succeeds", False, section="health")
    webhook_timeout: float = key(
        Duration(minimum=0.1), "how long to wait for the webhook to answer", 10.0, section="health"
    )
    encryption_recipients: tuple[str, ...] = key(
        STR_LIST, "age (age1...) or SSH public keys: backups are age-encrypted for them", (), section="encryption", name="recipients"
    )
    encryption_recipients_files: tuple[str, ...] = key(
        STR_LIST, "files with one recipient per line, like age -R", (), section="encryption", name="recipients_files"
    )
    identity_files: tuple[str, ...] = key(
        STR_LIST, "age identity files or SSH private keys that restore and verify decrypt with", (), section="encryption"
    )
    passphrase_file: str | None = key(  # read only when a command needs it: the secret stays out of Config
        OPTIONAL_TEXT, "file whose first line is the passphrase backups are age-encrypted with, and decrypted with", section="encryption"
    )


BACKEND_TYPE = Key("type", BackendTypeName(), "backend type", required=True)

SCHEMA: dict[str, tuple[Key, ...]] = {
    "docker": keys_of(Config, "docker"),
    "scheduler": keys_of(Config, "scheduler"),
    "health": keys_of(Config, "health"),
    # [backends.NAME]: type, then the settings of that type (storage_backends.registry)
    "backends": (BACKEND_TYPE,),
    # [jobs.NAME]
    "jobs": keys_of(JobConfig),
    "encryption": keys_of(Config, "encryption"),
    # [notify.NAME]
    "notify": keys_of(NotifyConfig),
}
NAMED_SECTIONS = ("backends", "jobs", "notify")  # tables of named tables
_CONFIG_FIELDS = _field_names(Config)  # (section, key) -> field of Config


def key_named(section: str, name: str) -> Key:
    """Return the key ``name`` of table ``section`` (e.g. for a command-line option that means the same)."""
    return next(k for k in SCHEMA[section] if k.name == name)


def backend_keys(kind: BackendType) -> tuple[Key, ...]:
    """Return the keys of a [backends.NAME] table of type ``kind``."""
    return (BACKEND_TYPE, *kind.settings)


def default_status_file() -> Path:
    """Return ``$XDG_STATE_HOME/volsafe/status.json`` (``~/.local/state/volsafe/status.json``)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "volsafe" / "status.json"

# ---------------------------------------------------------------------------------------------
# Finding and loading.


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


def _secret_names(data: dict) -> set[str]:
    """Return the names of the secret keys: the config's, and those of the backend types ``data`` uses."""
    names = {k.name for keys in SCHEMA.values() for k in keys if k.secret}
    tables = data.get("backends")
    kinds = [_type_of(table) for table in tables.values()] if isinstance(tables, dict) else []
    return names | {s.name for kind in kinds if kind is not None for s in kind.settings if s.secret}


def _type_of(table: Any) -> BackendType | None:
    """Return the registered type a [backends.NAME] table names, or None."""
    name = table.get("type") if isinstance(table, dict) else None
    return backend_type(name) if isinstance(name, str) else None


def _warn_if_exposed(path: Path, text: str) -> None:
    """Log a warning if ``path`` holds a literal secret and group or others may read it."""
    try:
        exposed = path.stat().st_mode & 0o077
    except OSError:
        return
    if not exposed:
        return

    data = tomllib.loads(text)
    secret_names = _secret_names(data)

    def literal_secrets(table: Any) -> bool:
        if not isinstance(table, dict):
            return False
        for name, value in table.items():
            # ${VAR} references and *_file keys keep the secret out of this file.
            if name in secret_names and isinstance(value, str) and value and not _ENV_REF.fullmatch(value):
                return True
            if literal_secrets(value):
                return True
        return False

    if literal_secrets(data):
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


_suggest = known_or_listed



def _nowhere(name: str) -> tuple[str, ...]:
    return ()


class _Checker:
    """Walks the parsed TOML against the declared keys, collecting errors instead of stopping at the first."""

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
        def get(s: str) -> dict:
            value = data.get(s)
            return value if isinstance(value, dict) else {}

        given = {}
        for section in ("docker", "scheduler", "health", "encryption"):
            for name, value in self.table((section,), get(section), SCHEMA[section]).items():
                given[_CONFIG_FIELDS[(section, name)]] = value
        backends = {name: self.backend(name, raw) for name, raw in self.named(("backends",), get("backends"))}
        jobs = {}
        for name, raw in self.named(("jobs",), get("jobs")):
            job = self.job(name, raw, backends)
            if job is not None:
                jobs[name] = job
        notify = {}
        for name, raw in self.named(("notify",), get("notify")):
            before = len(self.found)
            values = self.table(("notify", name), raw, SCHEMA["notify"])
            for job in values.get("jobs") or ():
                if job not in jobs and ("jobs", job) not in self.lines:
                    self.error(("notify", name, "jobs"), f"unknown job {job!r}{_suggest(job, list(jobs)) if jobs else ' (no [jobs.*] tables are defined)'}")
            if len(self.found) == before:
                notify[name] = NotifyConfig(name=name, **values)
        return Config(path=path, backends={n: b for n, b in backends.items() if b is not None}, jobs=jobs, notify=notify, **given)

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

    def table(
        self, path: tuple[str, ...], raw: dict, keys: tuple[Key, ...], elsewhere: Callable[[str], tuple[str, ...]] = _nowhere
    ) -> dict:
        """Return {key: converted value} for the keys ``raw`` gives; record an error for every other
        entry and every missing required key. ``elsewhere(name)``: the other backend types with key ``name``."""
        by_name = {k.name: k for k in keys}
        values: dict[str, Any] = {}
        for name in raw:
            given = self.given(path, raw, name, by_name, elsewhere)
            if given is not None:
                checked = self.convert(path + (given[0].name,), *given)
                if checked is not None:
                    values[given[0].name] = checked
        for k in keys:
            if k.required and k.name not in raw and f"{k.name}_file" not in raw:
                self.error(path, f"missing required key {k.name!r} ({k.help})")
        return values

    def given(self, path, raw: dict, name: str, by_name: dict[str, Key], elsewhere) -> tuple[Key, Any] | None:
        """Return (key, value) for the entry ``name`` of ``raw`` (``NAME_file``: the file's content for
        secret NAME), or None after recording why it is not a key of this table."""
        where = path + (name,)
        stem = name[: -len("_file")] if name.endswith("_file") else name
        if stem == name or (stem not in by_name and not elsewhere(stem)):
            stem = name
        k = by_name.get(stem)
        if k is None or (stem != name and not k.secret):
            self.not_a_key(where, name, elsewhere(stem) if k is None else (), by_name)
            return None
        if stem == name:
            return k, raw[name]
        if stem in raw:
            self.error(where, f"give {stem} or {name}, not both")
            return None
        value = self.read_secret(where, raw[name])
        return None if value is None else (k, value)

    def not_a_key(self, where: tuple[str, ...], name: str, types: tuple[str, ...], by_name: dict[str, Key]) -> None:
        """Record that ``name`` is no key of this table: one of other backend ``types``, or unknown."""
        if types:
            self.error(where, f"does not apply to this backend type (it is for type {' or '.join(types)})")
        else:
            known = list(by_name) + [f"{s.name}_file" for s in by_name.values() if s.secret]
            self.error(where, f"unknown key{_suggest(name, known)}")

    def convert(self, path: tuple[str, ...], k: Key, value: Any) -> Any:
        """Return ``value`` converted by ``k``'s converter, or None after recording what is wrong with it."""
        try:
            return k.convert(value, self.substitute)
        except Invalid as exc:
            for below, message in exc.problems:
                self.error(path + below, message)
        except ValueError as exc:
            self.error(path, str(exc))
        return None

    def read_secret(self, path: tuple[str, ...], value: Any) -> str | None:
        if not isinstance(value, str):
            self.error(path, "must be a file name (a string)")
            return None
        try:
            return Path(self.expand(path, value) or "").expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(path, f"cannot read secret file {value!r}: {getattr(exc, 'strerror', None) or exc}")
            return None

    def substitute(self, text: str) -> str:
        """Return ``text`` with ``${VAR}`` replaced from the environment. Raises ValueError if one is unset."""
        missing = [m for m in _ENV_REF.findall(text) if m not in self.environ]
        if missing:
            raise ValueError(f"environment variable {missing[0]} is not set")
        return _ENV_REF.sub(lambda m: self.environ[m.group(1)], text)

    def expand(self, path: tuple[str, ...], text: str) -> str | None:
        """Return ``text`` with ``${VAR}`` replaced from the environment; None (and an error) if unset."""
        try:
            return self.substitute(text)
        except ValueError as exc:
            self.error(path, str(exc))
            return None

    # -- named tables --

    def backend(self, name: str, raw: dict) -> BackendConfig | None:
        path = ("backends", name)
        kind = _type_of(raw)
        if kind is None:
            # Check the keys anyway, against those of every type, so that every error shows up at once.
            self.table(path, raw, (BACKEND_TYPE, *_any_type_settings()))
            return None
        values = self.table(path, raw, backend_keys(kind), _other_types_with(kind))
        if any(s.required and s.name not in raw and f"{s.name}_file" not in raw for s in kind.settings):
            return None
        # What was given, and the declared default of what was not (a given value that is invalid is left out).
        defaults = {s.name: s.default for s in kind.settings if s.name not in raw and s.default is not None}
        settings = {**defaults, **{k: v for k, v in values.items() if k != "type"}}
        for problem in kind.check(settings):
            self.error(path, problem)
        return BackendConfig(name, kind.name, settings)

    def job(self, name: str, raw: dict, backends: dict) -> JobConfig | None:
        path = ("jobs", name)
        before = len(self.found)
        values = self.table(path, raw, SCHEMA["jobs"])
        for rule in _JOB_RULES:
            for below, message in rule(values, raw, backends):
                self.error(path + below, message)
        if len(self.found) != before or not values.get("schedule"):
            return None
        return JobConfig(name=name, **values)


def _any_type_settings() -> tuple[Key, ...]:
    """Return the settings of every backend type, none required (for a table of an unknown type)."""
    unique = {s.name: s for kind in reversed(backend_types()) for s in kind.settings}
    return tuple(Setting(s.name, s.convert, s.help, s.default, secret=s.secret) for s in reversed(unique.values()))


def _other_types_with(kind: BackendType) -> Callable[[str], tuple[str, ...]]:
    def elsewhere(name: str) -> tuple[str, ...]:
        return tuple(k.name for k in backend_types() if k is not kind and any(s.name == name for s in k.settings))

    return elsewhere


# Rules across the keys of one [jobs.NAME] table: each yields (key path below the table, message).
_Rule = Callable[[dict, dict, dict], Iterator[tuple[tuple[str, ...], str]]]


def _selects_volumes(values: dict, raw: dict, backends: dict):
    if not any(values.get(k) for k in ("volumes", "volume_labels", "all_volumes", "projects")) and (
        "volumes" not in raw and "volume_labels" not in raw
    ):
        yield (), "give volumes, volume_labels, projects or all_volumes: the job has nothing to back up"


def _names_known_backends(values: dict, raw: dict, backends: dict):
    for backend in values.get("backends") or ():
        if backend not in backends:
            hint = _suggest(backend, list(backends)) if backends else " (no [backends.*] tables are defined)"
            yield ("backends",), f"unknown backend {backend!r}{hint}"


def _schedules_parse(values: dict, raw: dict, backends: dict):
    for name in ("schedule", "verify"):
        if values.get(name):
            try:
                parse_schedule(values[name], values.get("timezone"), values.get("jitter"))
            except ValueError as exc:
                yield (name,), str(exc)


def _stops_or_pauses(values: dict, raw: dict, backends: dict):
    if values.get("stop_containers") and values.get("pause_containers"):
        yield ("pause_containers",), "give stop_containers or pause_containers, not both"


def _hooks_have_a_container(values: dict, raw: dict, backends: dict):
    if (values.get("pre_hook") or values.get("post_hook")) and not values.get("hook_container"):
        yield (), "pre_hook and post_hook need hook_container (the container they run in)"


_JOB_RULES: tuple[_Rule, ...] = (_selects_volumes, _names_known_backends, _schedules_parse, _stops_or_pauses, _hooks_have_a_container)
