"""The store: one fsspec root holding every node's files, written atomically.

Layout (DESIGN.md):
    <root>/<experiment>/spec.yaml, plan.json
    <root>/nodes/<stage>/<key>/node.json, state.json, result.json, metrics.jsonl, DONE, ...

Atomicity: on a local (POSIX) filesystem a file is written under a temporary name and
renamed into place; on object stores a single PUT is atomic per object, and a node is
committed by writing `DONE` last. Exclusive creation (for leases) uses O_EXCL locally,
conditional PUTs (If-None-Match) on S3 and conditional uploads (ifGenerationMatch=0) on GCS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from xstilts.core.atomic import replacing, write_bytes_durably
from xstilts.core.errors import UserError, did_you_mean, warn
from xstilts.core.failpoints import failpoint, write_kind
from xstilts.core.object_store import configure_for, holds

DONE = "DONE"


def json_bytes(obj: Any) -> bytes:
    """The bytes `Store.write_json` writes for `obj` (a DONE marker describes them:
    `core.commit_record`)."""
    return (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()

_INSTALL_HINTS = {"s3": "xstilts[s3] (s3fs)", "s3a": "xstilts[s3] (s3fs)", "gs": "xstilts[gcs] (gcsfs)", "gcs": "xstilts[gcs] (gcsfs)"}
_MEMORY_LOCK = threading.Lock()

SCHEMES = ("file", "s3", "gs", "gcs", "memory")
"""Storage schemes a store may use: a path or file://, S3 (and S3-compatible endpoints),
Google Cloud Storage, and memory:// (one process only: unit tests). Other fsspec
schemes (http, ftp, ...) cannot hold leases or atomic files, so they are refused."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def cache_root() -> Path:
    """This machine's cache of a remote store: finished input nodes fetched for a job
    (by key, so they never go stale) and the logs of node processes until they are
    uploaded. `XSTILTS_CACHE` moves it (e.g. to node-local scratch)."""
    return Path(os.environ.get("XSTILTS_CACHE", Path.home() / ".cache" / "xstilts"))


def _protocols(fs: Any) -> set[str]:
    return set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


def _is_s3(fs: Any) -> bool:
    return bool({"s3", "s3a"} & _protocols(fs))


def _is_gcs(fs: Any) -> bool:
    return bool({"gs", "gcs"} & _protocols(fs))


class FileExists(Exception):
    """Exclusive creation found the file already there."""


def normalize_url(url: str) -> str:
    """A storage URL with plain paths made absolute `file://` URLs."""
    if "://" not in url:
        return "file://" + str(Path(url).expanduser().resolve())
    return url.rstrip("/")


def masked_url(url: str) -> str:
    """`url` with any credentials (`user:secret@`) replaced by `***@`: the only form of a
    storage URL that may appear in a message."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", url)


def check_storage_url(url: str) -> str:
    """Parse a storage URL strictly and check that its fsspec implementation is installed.

    Returns the normalized URL. Raises UserError (one line, credentials masked) for an
    empty value, a scheme without `//` (`s3:/bucket`), a scheme that is not a store
    (`ftp://`, `http://`), credentials in the URL, a query or fragment (it would become
    part of every object key), an object-store URL without a bucket, or a local path that
    is a file rather than a folder.
    """
    shown = masked_url(url.strip())
    if not url.strip():
        raise UserError("storage: empty; give a folder path or a URL (file://, s3://bucket/prefix, gs://bucket/prefix)")
    scheme = _SCHEME.match(url)
    if scheme and not url.startswith(f"{scheme.group(1)}://"):
        fixed = f"{scheme.group(1)}://{url[len(scheme.group(0)):].lstrip('/')}"
        raise UserError(f"storage: '{shown}' has no '//' after its scheme; did you mean '{masked_url(fixed)}'?")
    if "://" in url:
        protocol, rest = url.split("://", 1)
        if protocol not in SCHEMES:
            valid = ", ".join(f"{s}://" for s in SCHEMES if s != "gcs")
            raise UserError(f"storage: unknown storage scheme '{protocol}://'{did_you_mean(protocol, SCHEMES)}; "
                            f"use a folder path or one of {valid}")
        if "@" in rest.split("/", 1)[0]:
            raise UserError(f"storage: '{shown}' has credentials in it; URLs are written to spec.yaml and shown "
                            "by status: give them through the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                            "GOOGLE_APPLICATION_CREDENTIALS) instead")
        if "?" in rest or "#" in rest:
            raise UserError(f"storage: '{shown}' has a query or fragment ('?' or '#'), which would become part of "
                            "every object key; give options through the environment")
        if protocol in ("s3", "gs", "gcs") and not rest.split("/", 1)[0]:
            raise UserError(f"storage: '{shown}' names no bucket; use {protocol}://bucket/prefix")
    url = normalize_url(url)
    protocol = url.split("://", 1)[0]
    if protocol == "file":
        local = Path(url[len("file://"):])
        if local.exists() and not local.is_dir():
            raise UserError(f"storage: {local} is a file, not a folder; give a folder (it is created if missing)")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        hint = _INSTALL_HINTS.get(protocol, f"the fsspec implementation for '{protocol}'")
        raise UserError(f"storage: scheme '{protocol}://' needs {hint}; install it with pip") from None
    return url


def _link_exclusive(path: str, data: bytes) -> None:
    """Create `path` with `data` only if it does not exist, all or nothing.

    The content is written and synced under a private name, then hard-linked to `path`:
    `link` fails if `path` exists, and a crash at any moment leaves either no file or the
    whole one (O_EXCL followed by a write could leave an empty lease behind). Where a
    filesystem has no hard links, O_EXCL with the write right after it is the fallback.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExists(path) from None
    except OSError:  # no hard links here
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise FileExists(path) from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.unlink(tmp)


class Store:
    """Typed access to one storage root through fsspec."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = normalize_url(url)
        configure_for(self.url)  # bounded, logged S3 retries for every S3 client of this process
        # S3-compatible endpoints (MinIO, moto, Ceph) come from botocore's own
        # AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 variables, like every AWS tool.
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        # s3fs asks for an object's size (a HEAD) before every GET, to split large reads
        # into ranges; the store's own files are small, so one GET each is enough.
        self._whole_get: dict[str, Any] = {"max_concurrency": 1} if _is_s3(self.fs) else {}

    # -- paths ---------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def node_path(self, stage: str, key: str, *parts: str) -> str:
        """`<root>/nodes/<stage>/<key>[/parts]`. Stage and key never hold a slash (a stage
        name, a hex key), so they are joined as they are: a plan of 100k nodes asks for
        every node's folder, and `path` strips each part."""
        folder = f"{self.root}/nodes/{stage}/{key}"
        return "/".join([folder, *[p.strip("/") for p in parts if p]]) if parts else folder

    def experiment_path(self, experiment: str, *parts: str) -> str:
        return self.path(experiment, *parts)

    def url_of(self, path: str) -> str:
        """A full URL for a path of this store (for passing to other processes)."""
        protocol = self.url.split("://", 1)[0]
        return f"{protocol}://{path}" if not self.is_local else f"file://{path}"

    # -- reading -------------------------------------------------------------------------
    def _fresh(self, path: str) -> None:
        """Forget cached listings: other processes (jobs, launchers) write here too."""
        if not self.is_local:
            self.fs.invalidate_cache(path)

    def exists(self, path: str) -> bool:
        self._fresh(path)
        return bool(self.fs.exists(path))

    def read_text(self, path: str) -> str | None:
        """A file's text, or None when it is absent or not text (torn, garbage): said in
        one warning line naming the path, never raised."""
        try:
            data = self.fs.cat_file(path, **self._whole_get)
        except FileNotFoundError:
            return None
        try:
            return bytes(data).decode()
        except UnicodeDecodeError:
            warn(f"{self.url_of(path)} is not UTF-8 text (torn or foreign); treated as absent")
            return None

    def read_tail(self, path: str, nbytes: int) -> str | None:
        """The last `nbytes` of a file as text (undecodable bytes replaced, a line cut at
        the start dropped), or None when it is absent: one ranged GET on object stores,
        however long the file (a training log can be hundreds of megabytes)."""
        try:
            data = bytes(self.fs.cat_file(path, start=-nbytes))
        except FileNotFoundError:
            return None
        text = data.decode(errors="replace")
        if len(data) >= nbytes and "\n" in text:
            text = text.split("\n", 1)[1]
        return text

    def read_json(self, path: str) -> dict[str, Any] | None:
        """A JSON object file of the store, or None when it is absent, torn or garbage.

        The one reader of every JSON file the store holds (state, result, lease, node,
        progress, markers): a crash or a stray edit can leave any of them empty or half
        written, and one such file must never stop `status`, `launch` or `analysis`.
        It is treated as absent (so it is written again by the next writer: a relaunch
        repairs it) and named in one warning line.
        """
        text = self.read_text(path)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            warn(f"{self.url_of(path)} is torn or not JSON; treated as absent (the next write repairs it)")
            return None
        if not isinstance(value, dict):
            warn(f"{self.url_of(path)} holds a JSON {type(value).__name__}, not an object; treated as absent")
            return None
        return value

    @property
    def lists_by_prefix(self) -> bool:
        """Whether `find` can list the names below a folder that start with a prefix in
        one request of their own (S3, GCS), so that big folders can be listed in parallel."""
        return _is_s3(self.fs) or _is_gcs(self.fs)

    def find(self, path: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every file below `path` (recursively) whose name there starts with `prefix`,
        name -> fsspec info (size, and mtime, ETag or creation time): one paginated
        listing on object stores (a LIST per 1,000 objects), a directory walk locally.
        Empty when `path` does not exist."""
        self._fresh(path)
        try:
            if prefix and self.lists_by_prefix:
                found = self.fs.find(path, detail=True, prefix=prefix)
            else:
                found = self.fs.find(path, detail=True)
                if prefix:
                    start = path.rstrip("/") + "/" + prefix
                    found = {name: info for name, info in found.items() if name.startswith(start)}
        except FileNotFoundError:
            return {}
        return {name: info for name, info in found.items() if info.get("type", "file") != "directory"}

    def list(self, path: str) -> list[str]:
        self._fresh(path)
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    # -- writing -------------------------------------------------------------------------
    def write_text(self, path: str, text: str) -> None:
        """Write a whole file atomically: readers see the old content or the new, never half."""
        self.write_bytes(path, text.encode())

    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomically, as `write_text`: a temporary name renamed into place on a local
        filesystem, a single PUT on object stores."""
        failpoint(write_kind(path))
        if self.is_local:
            write_bytes_durably(path, data)
        else:
            self.fs.pipe_file(path, data)

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json_bytes(obj))

    def create_exclusive(self, path: str, text: str) -> None:
        """Create a file only if it does not exist; raise FileExists otherwise.

        This is the one primitive leases are built on, so it must be atomic on every
        backend: O_EXCL on POSIX, a conditional PUT on S3 (If-None-Match: *), a
        conditional upload on GCS (ifGenerationMatch=0: only if no live generation of the
        object exists), a lock for the in-process memory filesystem. fsspec's
        `mode="create"` asks s3fs and gcsfs for exactly these; a refusal (412) arrives
        as FileExistsError from gcsfs, as botocore's PreconditionFailed from s3fs.
        """
        data = text.encode()
        failpoint(write_kind(path))
        if self.is_local:
            _link_exclusive(path, data)
            return
        protocol = self.url.split("://", 1)[0]
        if protocol == "memory":
            with _MEMORY_LOCK:
                if self.fs.exists(path):
                    raise FileExists(path)
                self.fs.pipe_file(path, data)
            return
        try:
            self.fs.pipe_file(path, data, mode="create")
        except (FileExistsError, OSError) as exc:
            # botocore's PreconditionFailed surfaces as an OSError subclass
            if not isinstance(exc, FileExistsError) and "PreconditionFailed" not in repr(exc) and "412" not in str(exc):
                raise
            # A conditional PUT whose reply was lost is retried and then refused (412)
            # although it was ours: the content, unique to its writer, tells.
            if holds(self.fs, path, data):
                return
            raise FileExists(path) from None

    def remove(self, path: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass

    # -- directories ---------------------------------------------------------------------
    def upload_dir(self, local: Path, path: str) -> None:
        """Copy a local directory tree into the store under `path`."""
        for file in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            relative = file.relative_to(local).as_posix()
            target = f"{path}/{relative}"
            failpoint(write_kind(target))
            if self.is_local:
                with replacing(target) as tmp:
                    shutil.copyfile(file, tmp)
            else:
                self.fs.put_file(str(file), target)

    def local_dir(self, path: str, cache: Path) -> Path:
        """A local directory with the files under `path`: the path itself on a local
        filesystem, else a download into `cache`."""
        if self.is_local:
            return Path(path)
        cache.mkdir(parents=True, exist_ok=True)
        prefix = path.rstrip("/") + "/"
        self._fresh(path)
        for remote in self.fs.find(path):
            target = cache / remote[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(target))
        return cache
