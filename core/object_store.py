"""S3 retries: one explicit, bounded policy for every S3 client of the process, and one
log line per retry.

Why: object stores fail transiently (503 SlowDown, connections reset or closed without
a reply). Left to their defaults, two retry loops were stacked: s3fs calls botocore up
to 5 times for some errors, and botocore ("legacy" mode) makes up to 5 attempts per
call, so one request could take 25 attempts over minutes, all logged at DEBUG: a
flaky store looked like a hung job. Here:

- botocore's "standard" retry mode makes at most `XSTILTS_S3_MAX_ATTEMPTS` attempts per
  request in all (default 8; it overrides AWS_MAX_ATTEMPTS and AWS_RETRY_MODE), with
  jittered exponential backoff (at most 20 s between attempts). It retries 5xx replies,
  throttling (SlowDown) and connection errors (refused, reset, closed without a reply);
  other errors (404, 403, 412) surface at once. Its retry quota (per client) may stop
  retrying sooner in a long outage, never later.
- s3fs's own loop is cut to one pass, so that this number is the bound. (It also
  retried a body cut off mid-download; such a read now fails the node's attempt.)
- Below botocore, aiohttp sends an idempotent request (GET, HEAD, PUT, DELETE) once
  more by itself when its connection is closed or reset before the reply (RFC 9112
  9.3.1). That resend is not logged and has no switch: on the wire a request is sent
  at most twice per attempt.
- Every retry logs one WARNING on `xstilts.storage`, e.g.
  `S3 retry 2/7 after 503 SlowDown (PutObject bucket/prefix/nodes/.../state.json)`,
  and a request that used up its attempts logs `S3 gave up ...` before its error
  surfaces as usual. Only the operation, bucket, key and error are shown: never
  headers, signatures or credentials.

It applies to every s3fs filesystem created after `configure_for` ran in the process,
also those other libraries create through `fsspec.core.url_to_fs` (torch DCP's
checkpoint writer and reader, zarr, pyarrow's wrapper for Ray), because the bound goes
into `fsspec.config.conf` (default arguments of every new S3FileSystem, also carried
in a pickled filesystem's options) and the log lines come from handlers that every new
botocore session registers (`botocore.handlers.BUILTIN_HANDLERS`). A process that only
unpickles a filesystem (a Ray worker) keeps the attempt bound but logs retries, and
cuts s3fs's loop, only once it opens a `Store`. Other schemes (file://, memory://)
are left alone, and so is gs:// on Google Cloud Storage itself: gcsfs retries by itself
(6 attempts with backoff) and finds credentials as every Google tool does.

A GCS emulator (fake-gcs-server, which the tests run) is named by the variable Google's
own clients read, `STORAGE_EMULATOR_HOST`, and then gs:// is configured for it
(`configure_for`): gcsfs connects anonymously, as google-cloud-storage does for an
emulator, instead of walking the credential chain (which ends by probing the GCE
metadata server, 169.254.169.254), and uses its plain JSON-API filesystem, not the
default one that first asks Google's gRPC control API for each bucket's layout
(hierarchical or zonal), an API emulators do not serve.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from xstilts.core.errors import UserError

MAX_ATTEMPTS_ENV = "XSTILTS_S3_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 8
"""Attempts per S3 request, the first included. With standard mode's backoff, 8
attempts ride out half a minute of an unavailable endpoint on average (at most about
70 s of waiting) before the error surfaces."""

S3_PROTOCOLS = ("s3", "s3a")
GCS_PROTOCOLS = ("gs", "gcs")

GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
"""The GCS emulator's URL (http://host:port), as google-cloud-storage and gcsfs read it."""

MAX_POOL_CONNECTIONS = 64
"""Connections each S3 client may keep open: room for the store's bounded read pool."""

log = logging.getLogger("xstilts.storage")

_CAUSE = "xstilts_retry_cause"
"""Key in botocore's per-request context: why the previous attempt failed."""
_THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                               "RequestLimitExceeded", "TooManyRequestsException"})
_setup_lock = threading.Lock()
_handlers_installed = False


def s3_max_attempts() -> int:
    """`XSTILTS_S3_MAX_ATTEMPTS` (default 8): attempts per S3 request, the first one
    included; 1 turns retries off. Anything but a whole number >= 1 is a user error."""
    raw = os.environ.get(MAX_ATTEMPTS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_ATTEMPTS
    try:
        attempts = int(raw)
    except ValueError:
        attempts = 0
    if attempts < 1:
        raise UserError(f"{MAX_ATTEMPTS_ENV}: '{raw}' is not a whole number of attempts >= 1 "
                        f"(default {DEFAULT_MAX_ATTEMPTS})")
    return attempts


def configure_for(url: str) -> None:
    """Apply the S3 retry policy (module docstring) if `url` is on S3; idempotent.

    Called by every `Store`, so that a process has the policy before it creates its
    first S3 client; the attempt count is read again each time, so a changed
    `XSTILTS_S3_MAX_ATTEMPTS` applies to filesystems created afterwards. A gs:// URL
    with a GCS emulator set is configured for the emulator (`_configure_gcs_emulator`)."""
    protocol = url.split("://", 1)[0]
    if protocol in GCS_PROTOCOLS:
        _configure_gcs_emulator()
        return
    if protocol not in S3_PROTOCOLS:
        return
    attempts = s3_max_attempts()
    try:
        import s3fs
    except ImportError:  # Store reports the missing extra itself
        return
    import fsspec.config

    with _setup_lock:
        defaults = fsspec.config.conf.setdefault("s3", {})
        config_kwargs = dict(defaults.get("config_kwargs") or {})
        config_kwargs["retries"] = {"mode": "standard", "total_max_attempts": attempts}
        # botocore's default of 10 connections would cap the store's parallel reads
        # (`core.listing.READ_WORKERS`) at 10 requests in flight
        config_kwargs.setdefault("max_pool_connections", MAX_POOL_CONNECTIONS)
        defaults["config_kwargs"] = config_kwargs
        s3fs.S3FileSystem.retries = 1  # a class attribute, not an argument: one pass, botocore retries
        _install_retry_log()


def gcs_emulator() -> str | None:
    """The GCS emulator's URL from `STORAGE_EMULATOR_HOST`, or None for Google's own
    endpoint (unset, empty, or gcsfs's own spelling of that, 'default')."""
    value = os.environ.get(GCS_EMULATOR_ENV, "").strip()
    return value if value not in ("", "default") else None


def _configure_gcs_emulator() -> None:
    """With a GCS emulator set, have every new gs:// filesystem of the process use gcsfs's
    JSON-API class with anonymous access (module docstring); without one, nothing."""
    if gcs_emulator() is None:
        return
    try:
        from gcsfs.core import GCSFileSystem
    except ImportError:  # Store reports the missing extra itself
        return
    import fsspec
    import fsspec.config

    with _setup_lock:
        for protocol in GCS_PROTOCOLS:
            fsspec.register_implementation(protocol, GCSFileSystem, clobber=True)
            fsspec.config.conf.setdefault(protocol, {}).setdefault("token", "anon")


PROBE_ATTEMPTS = 2
"""Attempts of the CLI's one reachability check: an endpoint that is down is one error
within seconds, not the minutes of backoff a job rides out (`probe`)."""


def probe(fs: Any, path: str) -> None:
    """Look at `path` once, as the CLI does before it writes anything; raise what the
    backend raises if the storage does not answer.

    On S3 with at most `PROBE_ATTEMPTS` attempts and no retry lines: a user who named a
    wrong endpoint gets one line at once. A filesystem of its own (not the cached one), so
    that the jobs' and the rest of the command's requests keep the full bound."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if set(protocols) & set(GCS_PROTOCOLS):
        _probe_gcs_bucket(fs, path)
        return
    if not set(protocols) & set(S3_PROTOCOLS):
        fs.exists(path)
        return
    options = dict(fs.storage_options)
    config_kwargs = dict(options.get("config_kwargs") or {})
    config_kwargs["retries"] = {"mode": "standard", "total_max_attempts": PROBE_ATTEMPTS}
    quick = type(fs)(**{**options, "config_kwargs": config_kwargs, "skip_instance_cache": True})
    was_disabled, log.disabled = log.disabled, True
    try:
        quick.exists(path)
    finally:
        log.disabled = was_disabled


NO_GCS_CREDENTIALS = ("no Google credentials found; set GOOGLE_APPLICATION_CREDENTIALS to a service account's "
                      "key file, run 'gcloud auth application-default login', or run on a Google VM with a "
                      "service account")


def _probe_gcs_bucket(fs: Any, path: str) -> None:
    """Check that gcsfs found credentials for Google's own endpoint, then look up the
    bucket of `path` (one GET).

    Why: where the credential chain finds nothing, gcsfs falls back to anonymous access
    without a word, and Google refuses each request (401 or 403) with a message that
    names no cause; nobody can write a store anonymously. And gcsfs answers a lookup of a
    path in a bucket that does not exist with False, as for a missing object, so a
    misspelt bucket would first show as the failure of the first write."""
    credentials = getattr(fs, "credentials", None)
    if getattr(fs, "on_google", False) and getattr(credentials, "method", None) == "anon":
        raise PermissionError(NO_GCS_CREDENTIALS)
    bucket = fs.split_path(path)[0]
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise FileNotFoundError(f"bucket '{bucket}' does not exist (or these credentials cannot see it)") from None


def _install_retry_log() -> None:
    """Have every botocore session created from now on log its S3 retries (two event
    handlers; see `_note_failure` and `_announce_retry`). Once per process."""
    global _handlers_installed
    if _handlers_installed:
        return
    from botocore import handlers

    handlers.BUILTIN_HANDLERS.append(("needs-retry.s3", _note_failure))
    handlers.BUILTIN_HANDLERS.append(("request-created.s3", _announce_retry))
    _handlers_installed = True


def _note_failure(request_dict: dict[str, Any], attempts: int, operation: Any = None, response: Any = None,
                  caught_exception: BaseException | None = None, **_: Any) -> None:
    """After each attempt (botocore's `needs-retry` event): remember in the request's
    context why it failed, for the retry line; log once when no attempt is left.

    Returns None: the decision to retry stays with botocore's own handler."""
    context = request_dict["context"]
    cause = _failure(response, caught_exception)
    if cause is None:
        context.pop(_CAUSE, None)
        return None
    context[_CAUSE] = cause
    maximum = _max_attempts(context)
    if maximum is not None and attempts >= maximum:
        log.warning("S3 gave up after %d attempts, the last %s (%s %s)", attempts, cause,
                    getattr(operation, "name", "?"), _target(context))
    return None


def _announce_retry(request: Any, operation_name: str, **_: Any) -> None:
    """Before each attempt (botocore's `request-created` event): one WARNING line if it
    is a retry, which is only the case once botocore decided to retry."""
    context = request.context
    attempt = int(context.get("retries", {}).get("attempt", 1))
    if attempt < 2:
        return
    maximum = _max_attempts(context)
    log.warning("S3 retry %d/%s after %s (%s %s)", attempt - 1, "?" if maximum is None else maximum - 1,
                context.get(_CAUSE, "an error"), operation_name, _target(context))


def _failure(response: Any, caught_exception: BaseException | None) -> str | None:
    """'503 SlowDown' or 'ConnectionClosedError' for an attempt that failed in a way worth
    retrying; None for a success or a definite answer (404, 412, ...)."""
    if caught_exception is not None:
        return type(caught_exception).__name__
    if response is None:
        return None
    status = int(response[0].status_code)
    code = str((response[1] or {}).get("Error", {}).get("Code", ""))
    if status >= 500 or status == 429 or code in _THROTTLING_CODES:
        return f"{status} {code}" if code and code != str(status) else str(status)  # a HEAD reply has no code
    return None


def _max_attempts(context: dict[str, Any]) -> int | None:
    config = context.get("client_config")
    retries = getattr(config, "retries", None) or {}
    if retries.get("total_max_attempts") is not None:
        return int(retries["total_max_attempts"])
    if retries.get("max_attempts") is not None:  # botocore's older spelling counts retries only
        return int(retries["max_attempts"]) + 1
    return None


def _target(context: dict[str, Any]) -> str:
    """'bucket/key' (or 'bucket/prefix') of the request: its parameters, not its URL
    (which may carry a signature in a presigned query)."""
    params = context.get("input_params") or {}
    parts = (params.get("Bucket"), params.get("Key") or params.get("Prefix"))  # Prefix: a listing
    return "/".join(str(part) for part in parts if part) or "-"


def holds(fs: Any, path: str, data: bytes) -> bool:
    """Whether the object at `path` holds exactly `data`.

    For a conditional PUT (create only if absent) answered 412 PreconditionFailed: if
    the reply to an earlier attempt of that same request was lost (the connection reset
    after the store had applied it), its retry meets the object that attempt created.
    A creator whose content is unique (a lease: host, PID, creation time) tells that
    case from a race it lost by reading the object back with this."""
    try:
        return bool(fs.cat_file(path) == data)
    except FileNotFoundError:
        return False
