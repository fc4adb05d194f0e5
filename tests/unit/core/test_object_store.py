"""The S3 retry policy (xstilts.core.object_store) as every new S3 filesystem gets it.
Retries against a real endpoint: tests/integration/s3/test_fault_proxy.py."""

from __future__ import annotations

from typing import Any

import fsspec
import fsspec.config
import pytest
from botocore.awsrequest import AWSResponse

from xstilts.core.errors import UserError
from xstilts.core.object_store import (
    DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_ENV, MAX_POOL_CONNECTIONS, _failure, s3_max_attempts,
)
from xstilts.core.store import Store


def test_the_attempt_bound_defaults_and_must_be_a_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_ATTEMPTS_ENV, raising=False)
    assert s3_max_attempts() == DEFAULT_MAX_ATTEMPTS == 8
    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "3")
    assert s3_max_attempts() == 3
    for bad in ("0", "-1", "three", "2.5"):
        monkeypatch.setenv(MAX_ATTEMPTS_ENV, bad)
        with pytest.raises(UserError, match=MAX_ATTEMPTS_ENV):
            Store("s3://xstilts-test/x")


def test_every_new_s3_filesystem_gets_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Also those other libraries make with url_to_fs (torch DCP, zarr), and the options a
    filesystem carries when pickled to another process; fsspec settings of the user's
    own (connect_timeout here) are kept."""
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"connect_timeout": 3}})
    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "5")
    store = Store("s3://xstilts-test/bounded")
    other, _ = fsspec.core.url_to_fs("s3://xstilts-test/elsewhere")
    for fs in (store.fs, other):
        assert fs.config_kwargs == {"connect_timeout": 3, "retries": {"mode": "standard", "total_max_attempts": 5},
                                    "max_pool_connections": MAX_POOL_CONNECTIONS}
        assert fs.retries == 1  # s3fs's own loop: one pass
    assert other.storage_options["config_kwargs"]["retries"]["total_max_attempts"] == 5


def test_local_stores_leave_fsspec_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delitem(fsspec.config.conf, "s3", raising=False)
    Store(str(tmp_path))
    assert "s3" not in fsspec.config.conf


def reply(status: int, code: str | None) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse("http://127.0.0.1/b/k", status, {}, None), ({"Error": {"Code": code}} if code else {})


def test_what_counts_as_a_failure_worth_a_retry_line() -> None:
    assert _failure(reply(503, "SlowDown"), None) == "503 SlowDown"
    assert _failure(reply(503, "503"), None) == "503"  # a HEAD reply: no body, the status as code
    assert _failure(reply(400, "RequestTimeout"), None) == "400 RequestTimeout"
    assert _failure(None, ConnectionResetError()) == "ConnectionResetError"
    for definite in (reply(200, None), reply(404, "NoSuchKey"), reply(412, "PreconditionFailed")):
        assert _failure(definite, None) is None
