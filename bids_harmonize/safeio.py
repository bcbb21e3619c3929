"""Bounded reads of user input and atomic writes of outputs.

Every small text file the app reads from the user (sidecars, ``participants.tsv``,
``--platform-map``, ``--bids-filter-file``, ``--tracer-file``, ``--config-file``) goes
through :func:`read_bytes_bounded`: it must be a regular file (a FIFO would block the
run, ``/dev/zero`` behind a link would never end) and at most ``limit`` bytes. Parsed
JSON is bounded in depth (:func:`loads_json`), YAML may not use aliases
(:func:`safe_yaml_load`: a 700-byte "billion laughs" document expands to gigabytes).

Outputs are written by :func:`atomic_write_bytes` / :func:`atomic_write_text`: a
temporary name in the same folder, flushed, then renamed, so a kill or a full disk
never leaves a truncated file under its final name.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from pathlib import Path

#: Size limits (bytes) of the small files read from the user. Not published constants:
#: far above what a real file needs (a 600-frame PET sidecar is ~40 kB; participants.tsv of
#: 100 000 participants a few MB), far below what hurts.
SIDECAR_LIMIT = 8 << 20
TABLE_LIMIT = 64 << 20
SMALL_FILE_LIMIT = 1 << 20
#: Deepest nesting accepted in a JSON file (BIDS sidecars are 2-3 levels deep).
MAX_JSON_DEPTH = 32


class UnsafeInputError(ValueError):
    """A user file that is not a regular file, too large, or too deeply nested (one line)."""


#: errno values that mean "the disk (or the user's quota) is full"
DISK_FULL_ERRNOS = frozenset(e for e in (getattr(errno, "ENOSPC", None),
                                         getattr(errno, "EDQUOT", None)) if e is not None)


class DiskFullError(OSError):
    """An output could not be written: no space left (or the quota is used up).

    Still an ``OSError`` (callers that catch those keep working); its text is the one line
    a user needs, and ``status`` the app's exit status for a problem of the machine, not
    of the app (1), so the top-level handler can print it as it prints a usage error.

    >>> str(DiskFullError(errno.ENOSPC, "No space left on device", "/out/x.tsv")).split(":")[0]
    'no space left on device writing /out/x.tsv'
    """

    status = 1

    def __str__(self) -> str:
        what = "disk quota exceeded" if self.errno == getattr(errno, "EDQUOT", None) else \
            "no space left on device"
        return (f"{what} writing {self.filename}: free space there and rerun with the same "
                "-w work folder (finished steps are kept)")


def disk_full(exc: BaseException, path) -> BaseException:
    """``exc`` as a :class:`DiskFullError` naming ``path`` when it is a full disk, else ``exc``."""
    if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) \
            and exc.errno in DISK_FULL_ERRNOS:
        return DiskFullError(exc.errno, exc.strerror, str(path))
    return exc


def check_regular(path, what: str | None = None) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed), refusing anything but a regular file.

    >>> check_regular("/dev/zero")
    Traceback (most recent call last):
    ...
    bids_harmonize.safeio.UnsafeInputError: /dev/zero: not a regular file (a character device)
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeInputError(f"{what or path}: not a regular file ({_kind(info.st_mode)})")
    return info


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def read_bytes_bounded(path, limit: int, what: str | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; :class:`UnsafeInputError`
    otherwise. ``OSError`` (missing, permission) passes through to the caller.

    The file is opened non-blocking and checked again on the open descriptor, so a FIFO
    swapped in after the first check cannot block the run.
    """
    name = what or str(path)
    check_regular(path, name)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeInputError(f"{name}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise UnsafeInputError(f"{name}: {info.st_size} bytes, more than the {limit} "
                                   "this app reads from such a file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnsafeInputError(f"{name}: more than the {limit} bytes this app reads from "
                                   "such a file")
        return b"".join(chunks)
    finally:
        os.close(fd)


def json_depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion.

    >>> json_depth(1), json_depth([1, {"a": [2]}])
    (0, 3)
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def loads_json(text: str, *, what: str, max_depth: int = MAX_JSON_DEPTH,
               duplicates: list | None = None):
    """``json.loads`` bounded in depth; duplicate keys are appended to ``duplicates``.

    Raises :class:`UnsafeInputError` for nesting deeper than ``max_depth`` and
    ``json.JSONDecodeError`` for invalid JSON. ``NaN``/``Infinity`` literals and numbers
    out of the float range (``1e400``) are kept as float infinities/NaN for the caller's
    finiteness checks; integers of more digits than Python converts are refused.

    >>> dups = []
    >>> loads_json('{"a": 1, "a": 2}', what="x", duplicates=dups), dups
    ({'a': 2}, ['a'])
    >>> loads_json("[" * 40 + "]" * 40, what="x.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.safeio.UnsafeInputError: x.json: JSON nested more than 32 levels deep
    """

    def pairs(items):
        out = {}
        for key, value in items:
            if key in out and duplicates is not None:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise UnsafeInputError(f"{what}: JSON nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        # int() of more than sys.get_int_max_str_digits() digits
        raise UnsafeInputError(f"{what}: a number too long to read ({str(exc)[:80]})") from None
    if json_depth(data) > max_depth:
        raise UnsafeInputError(f"{what}: JSON nested more than {max_depth} levels deep")
    return data


def safe_yaml_load(text: str, *, what: str):
    r"""``yaml.safe_load`` refusing aliases (:class:`UnsafeInputError`): no expansion bombs.

    >>> safe_yaml_load("a: &x [1]\nb: *x\n", what="t.yaml")
    Traceback (most recent call last):
    ...
    bids_harmonize.safeio.UnsafeInputError: t.yaml: YAML aliases (*x) are not accepted (line 2)
    """
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise UnsafeInputError(f"{what}: YAML aliases (*{event.anchor}) are not "
                                       f"accepted (line {event.start_mark.line + 1})")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def atomic_write_bytes(path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A failure (disk full, kill) leaves the previous file or none, never a partial one;
    the temporary file is removed on failure. Without ``mode`` the file gets the
    permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask, so a
    group-writable umask on a shared cluster is kept); ``mode`` sets them exactly.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> atomic_write_bytes(out, b"one").read_bytes(), sorted(p.name for p in out.parent.iterdir())
    (b'one', ['b.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # 0o666: the umask applies, as for open(path, "w")
            fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
            break
        except FileExistsError:
            continue
        except OSError as exc:  # a full disk can refuse even the empty file (no inode)
            full = disk_full(exc, path)
            if full is not exc:
                raise full from exc
            raise
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"{path}: no free temporary name")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = disk_full(exc, path)
        if full is not exc:
            raise full from exc
        raise
    return path


def atomic_write_text(path, text: str, *, mode: int | None = None) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path, data, *, indent: int | None = 2, **dumps) -> Path:
    """:func:`atomic_write_text` of ``json.dumps(data)`` and a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps) + "\n")


def atomic_write_table(table, path, **to_csv) -> Path:
    """A pandas table as a BIDS TSV (tab, ``n/a``, ``\\n``), rendered whole, then written
    atomically. ``to_csv`` keywords override those defaults.

    >>> import pandas as pd, tempfile
    >>> out = Path(tempfile.mkdtemp()) / "t.tsv"
    >>> atomic_write_table(pd.DataFrame({"a": [1, None]}), out).read_text()
    'a\\n1.0\\nn/a\\n'
    """
    options = {"sep": "\t", "index": False, "na_rep": "n/a", "lineterminator": "\n", **to_csv}
    return atomic_write_text(path, table.to_csv(None, **options))


def atomic_savefig(fig, path, **savefig) -> Path:
    """``fig.savefig`` rendered in memory, then written atomically (a kill or a full disk
    while matplotlib writes leaves no half figure). ``format`` defaults to the suffix."""
    import io

    buffer = io.BytesIO()
    savefig.setdefault("format", Path(path).suffix.lstrip(".") or "svg")
    fig.savefig(buffer, **savefig)
    return atomic_write_bytes(path, buffer.getvalue())
