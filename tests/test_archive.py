"""Archive keys and stores, against a real directory and a real S3-compatible server (moto)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from recorder.archive import (
    FileStore,
    S3Store,
    StoredObject,
    archive_key,
    key_segment,
    manifest_key,
    open_store,
    s3_client,
)
from recorder.config import Settings
from recorder.errors import StorageError
from tests.factories import BUCKET

SAFE = re.compile(r"[A-Za-z0-9._~%-]+")


@pytest.fixture
def s3_store(s3_server: str) -> S3Store:
    settings = Settings(storage_url=f"s3://{BUCKET}/rec", s3_endpoint_url=s3_server)
    return S3Store(s3_client(settings), BUCKET, "rec")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, 1 << 20):
            chunk = os.urandom(min(1 << 20, size - offset))
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


# --- keys -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["../", "a/b", ".", "..", "", "\x00", "📹", "x" * 10_000, "é" * 5000, "~", "\ud800"])
def test_key_segment_is_one_safe_segment(value: str) -> None:
    segment = key_segment(value)
    assert SAFE.fullmatch(segment)
    assert segment not in (".", "..")
    assert len(segment) <= 200


def test_key_segment_examples() -> None:
    assert key_segment("a/b") == "a%2Fb"
    assert key_segment("../") == "..%2F"
    assert key_segment(".") == "%2E"
    assert key_segment("..") == "%2E%2E"
    assert key_segment("") == "~"
    assert key_segment("\x00") == "%00"
    assert key_segment("live_01.sd-x") == "live_01.sd-x"
    assert key_segment("~") == "%7E"


def test_key_segment_is_injective_on_tricky_values() -> None:
    values = ["", "~", "%", "%2E", ".", "..", "a/b", "a%2Fb", "x" * 300, "x" * 301, "x" * 299 + "/", "%00", "\x00"]
    assert len({key_segment(v) for v in values}) == len(values)


def test_long_segment_is_cut_between_characters_with_a_hash() -> None:
    segment = key_segment("é" * 5000)
    head, marker, digest = segment.rpartition("~")
    assert marker and re.fullmatch(r"[0-9a-f]{16}", digest)
    assert re.fullmatch(r"(%C3%A9)+", head)


def test_archive_key_layout_and_utc_date() -> None:
    # 2024-03-01 00:30 UTC is still Feb 29 in New York and already Mar 1 in Beijing at 08:30.
    started_at = datetime(2024, 3, 1, 0, 30, tzinfo=UTC).timestamp()
    key = archive_key(
        prefix="rec/2024",
        app="live.example.com",
        stream_id="room/1",
        started_at=started_at,
        broadcast_id="b42",
        version=3,
        ext="mp4",
    )
    assert key == "rec/2024/live.example.com/room%2F1/2024/03/01/b42-v3.mp4"
    assert manifest_key(key) == "rec/2024/live.example.com/room%2F1/2024/03/01/b42-v3.json"


def test_archive_key_without_prefix_and_hostile_parts() -> None:
    key = archive_key(prefix="", app="..", stream_id="../../etc", started_at=0, broadcast_id="", version=1, ext=".")
    assert key == "%2E%2E/..%2F..%2Fetc/1970/01/01/~-v1.%2E"
    assert all(SAFE.fullmatch(part) and part not in (".", "..") for part in key.split("/"))


def test_archive_key_rejects_version_zero() -> None:
    with pytest.raises(ValueError, match="version"):
        archive_key(prefix="", app="a", stream_id="s", started_at=0, broadcast_id="b", version=0, ext="mp4")


# --- file store ---------------------------------------------------------------


def test_file_store_put_exists_url_local_path(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "archive")
    source = tmp_path / "in.mp4"
    sha256 = write_random(source, 300_000)
    key = "app/room%2F1/2024/03/01/b-v1.mp4"

    assert store.exists(key) is None
    stored = store.put_file(key, source, content_type="video/mp4")

    assert stored == StoredObject(key, 300_000, sha256)
    assert store.exists(key) == stored
    path = store.local_path(key)
    assert path == (tmp_path / "archive" / key).resolve()
    assert path.read_bytes() == source.read_bytes()
    assert store.url(key, expires=60) == path.as_uri()
    assert "%252F" in store.url(key, expires=60)  # the literal "%" of the key is escaped in the URI
    assert [p.name for p in path.parent.iterdir()] == ["b-v1.mp4"]  # no temp file left behind


def test_file_store_re_put_same_bytes_leaves_file_untouched(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    first = store.put_bytes("a/m.json", b'{"v": 1}', content_type="application/json")
    path = store.local_path("a/m.json")
    assert path is not None
    os.utime(path, (1, 1))

    assert store.put_bytes("a/m.json", b'{"v": 1}', content_type="application/json") == first
    assert path.stat().st_mtime == 1

    changed = store.put_bytes("a/m.json", b'{"v": 2}', content_type="application/json")
    assert changed.sha256 == hashlib.sha256(b'{"v": 2}').hexdigest()
    assert path.read_bytes() == b'{"v": 2}'


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", ".", "a/.."])
def test_file_store_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    store = FileStore(tmp_path / "root")
    with pytest.raises(ValueError, match="inside"):
        store.put_bytes(key, b"x", content_type="text/plain")
    assert not (tmp_path / "x").exists()


def test_file_store_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="inside"):
        FileStore(tmp_path / "root").put_bytes("link/x", b"x", content_type="text/plain")


def test_file_store_check(tmp_path: Path) -> None:
    FileStore(tmp_path / "new").check()
    assert (tmp_path / "new").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError):
        FileStore(tmp_path / "file" / "sub").check()


def test_file_store_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a file where a directory should be")
    with pytest.raises(StorageError, match="cannot store"):
        FileStore(tmp_path).put_bytes("a/b", b"x", content_type="text/plain")


# --- S3 store -----------------------------------------------------------------


def count_uploads(store: S3Store) -> Counter[str]:
    calls: Counter[str] = Counter()
    for operation in ("PutObject", "CreateMultipartUpload", "UploadPart"):
        store.client.meta.events.register(f"before-call.s3.{operation}", lambda model, **_: calls.update([model.name]))
    return calls


def test_s3_multipart_put_verifies_and_re_put_is_a_no_op(s3_store: S3Store, tmp_path: Path) -> None:
    source = tmp_path / "big.mp4"
    sha256 = write_random(source, 20 * 1024 * 1024 + 123)
    key = archive_key(
        prefix=s3_store.prefix, app="live", stream_id="room 1", started_at=0, broadcast_id="b1", version=1, ext="mp4"
    )
    calls = count_uploads(s3_store)

    stored = s3_store.put_file(key, source, content_type="video/mp4")

    assert stored == StoredObject(key, source.stat().st_size, sha256)
    assert calls == {"CreateMultipartUpload": 1, "UploadPart": 2}
    head = s3_store.client.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"] == {"sha256": sha256}
    assert head["ContentType"] == "video/mp4"
    assert s3_store.exists(key) == stored

    assert s3_store.put_file(key, source, content_type="video/mp4") == stored
    assert calls == {"CreateMultipartUpload": 1, "UploadPart": 2}

    response = requests.get(s3_store.url(key, expires=300), stream=True, timeout=30)
    response.raise_for_status()
    downloaded = hashlib.sha256()
    for chunk in response.iter_content(1 << 20):
        downloaded.update(chunk)
    assert downloaded.hexdigest() == sha256


def test_s3_put_bytes_and_exists(s3_store: S3Store) -> None:
    key = "rec/m.json"
    assert s3_store.exists(key) is None
    stored = s3_store.put_bytes(key, b"{}", content_type="application/json")
    assert stored == StoredObject(key, 2, hashlib.sha256(b"{}").hexdigest())
    assert s3_store.exists(key) == stored
    assert s3_store.local_path(key) is None
    s3_store.check()


def test_s3_missing_bucket_is_a_storage_error(s3_server: str) -> None:
    store = S3Store(s3_client(Settings(s3_endpoint_url=s3_server)), "no-such-bucket")
    with pytest.raises(StorageError, match="no-such-bucket"):
        store.check()
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.put_bytes("k", b"x", content_type="text/plain")


def test_s3_unreachable_endpoint_is_a_storage_error(s3_server: str) -> None:
    settings = Settings(s3_endpoint_url=f"http://127.0.0.1:{closed_port()}")
    store = S3Store(s3_client(settings, connect_timeout=1, max_attempts=1), BUCKET)
    with pytest.raises(StorageError, match="Could not connect") as caught:
        store.check()
    assert "testing" not in str(caught.value)
    with pytest.raises(StorageError):
        store.exists("k")


# --- open_store -------------------------------------------------------------------


def test_open_store_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store(Settings(storage_url="file://./data/archive"))
    assert isinstance(relative, FileStore)
    assert relative.root == tmp_path.resolve() / "data" / "archive"
    assert relative.prefix == ""

    absolute = open_store(Settings(storage_url=f"file://{tmp_path}/my%20dir"))
    assert isinstance(absolute, FileStore)
    assert absolute.root == tmp_path.resolve() / "my dir"


def test_open_store_s3_url(s3_server: str) -> None:
    store = open_store(Settings(storage_url=f"s3://{BUCKET}/rec/live/", s3_endpoint_url=s3_server))
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (BUCKET, "rec/live")
    store.check()
    bare = open_store(Settings(storage_url=f"s3://{BUCKET}", s3_endpoint_url=s3_server))
    assert bare.prefix == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/dir", "'ftp'"),
        ("/srv/archive", "'bare'"),
        ("file://", "needs a directory"),
        ("s3://", "bucket"),
        ("s3://key:secret@bucket/p", "bucket"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/a b", "prefix"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        open_store(Settings(storage_url=url))
    assert "secret" not in str(caught.value)
