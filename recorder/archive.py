"""Archive storage: object keys, and one store interface over S3 and a local directory.

Keys are full paths inside the store (the S3 prefix included); ``archive_key``
builds them so that no part taken from input can add a ``/`` or stand as ``.``/``..``.
Every put streams, records the SHA-256, is atomic, and is a no-op when the same
bytes are already stored, so a task that runs twice yields one archive.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from recorder.config import Settings
from recorder.errors import StorageError

MAX_SEGMENT = 200
MiB = 1024 * 1024
# Multipart above 16 MiB keeps memory bounded (4 x 16 MiB in flight) and lets a
# failed upload be aborted part-wise by the transfer manager.
TRANSFER = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=4)
_BUCKET = re.compile(r"[A-Za-z0-9._-]+")
_MISSING = ("404", "NoSuchKey", "NotFound")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex; "" when an S3 object was stored without our metadata


class ArchiveStore(Protocol):
    prefix: str

    def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject: ...
    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject: ...
    def exists(self, key: str) -> StoredObject | None: ...
    def url(self, key: str, *, expires: int) -> str: ...
    def local_path(self, key: str) -> Path | None: ...
    def check(self) -> None: ...


# --- keys -------------------------------------------------------------------


def _escape(value: str) -> str:
    # surrogatepass: JSON may carry lone surrogates; they still encode injectively.
    return quote(value.encode("utf-8", "surrogatepass"), safe="").replace("~", "%7E")


def key_segment(value: str) -> str:
    """Escape one input value into a single key segment of ``[A-Za-z0-9._~%-]``.

    Percent-encoding (UTF-8, uppercase hex) is applied to everything but
    ``A-Za-z0-9._-``; ``~`` is escaped too, which frees it as this module's
    marker, so distinct values give distinct segments:

    - ``""`` becomes ``~``; ``.`` and ``..`` become ``%2E`` and ``%2E%2E``;
    - a segment longer than 200 characters is cut and ends in ``~`` plus 16 hex
      digits of the value's SHA-256 (cut between characters, so the head still decodes).
    """
    segment = _escape(value)
    if not segment:
        return "~"
    if segment in (".", ".."):
        return segment.replace(".", "%2E")
    if len(segment) <= MAX_SEGMENT:
        return segment
    head = ""
    for char in value:
        piece = _escape(char)
        if len(head) + len(piece) > MAX_SEGMENT - 17:
            break
        head += piece
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{head}~{digest[:16]}"


def archive_key(
    *, prefix: str, app: str, stream_id: str, started_at: float, broadcast_id: str, version: int, ext: str
) -> str:
    """``<prefix>/<app>/<stream_id>/<YYYY>/<MM>/<DD>/<broadcast_id>-v<version>.<ext>``, date in UTC."""
    if version < 1:
        raise ValueError(f"archive version must be >= 1, got {version}")
    day = datetime.fromtimestamp(started_at, tz=UTC)
    parts = [key_segment(part) for part in prefix.split("/") if part]
    parts += [key_segment(app), key_segment(stream_id), f"{day:%Y}", f"{day:%m}", f"{day:%d}"]
    parts.append(f"{key_segment(broadcast_id)}-v{version}.{key_segment(ext)}")
    return "/".join(parts)


def manifest_key(archive_key: str) -> str:
    """The manifest sits beside the archive: the same key with ``.json`` as its extension."""
    head, slash, name = archive_key.rpartition("/")
    stem = name.rpartition(".")[0] or name
    key = f"{head}{slash}{stem}.json"
    if key == archive_key:
        raise ValueError(f"archive key {archive_key!r} already ends in .json")
    return key


# --- local directory ----------------------------------------------------------


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256) of a file, read once."""
    with path.open("rb") as source:
        digest = hashlib.file_digest(source, "sha256")
        return source.tell(), digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Keys are paths below ``root``; the root is the archive, so ``prefix`` is ``""``."""

    prefix = ""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path == self.root or not path.is_relative_to(self.root):
            raise ValueError(f"key {key!r} does not name a file inside {self.root}")
        return path

    def _write(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        target = self._path(key)
        # A temp file in the target's directory makes os.replace an atomic rename.
        temp = target.parent / f".{uuid.uuid4().hex}.tmp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            with temp.open("xb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            stored = StoredObject(key, size, digest.hexdigest())
            if self.exists(key) != stored:  # the same bytes stay untouched
                os.replace(temp, target)
                _fsync_dir(target.parent)
            return stored
        except OSError as error:
            raise StorageError(f"cannot store {key!r} under {self.root}: {error.strerror or error}") from error
        finally:
            if temp.exists():  # False too when mkdir failed, so the StorageError is not masked
                temp.unlink()

    def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject:
        # No content type on disk: the extension carries it.
        with path.open("rb") as source:
            return self._write(key, iter(lambda: source.read(MiB), b""))

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        return self._write(key, [data])

    def exists(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            size, sha256 = sha256_file(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as error:
            raise StorageError(f"cannot read {key!r} under {self.root}: {error.strerror or error}") from error
        return StoredObject(key, size, sha256)

    def url(self, key: str, *, expires: int) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"archive directory {self.root} is unusable: {error.strerror or error}") from error
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"archive directory {self.root} is not writable")


# --- S3 -------------------------------------------------------------------------


def s3_client(
    settings: Settings, *, connect_timeout: float = 5, read_timeout: float = 60, max_attempts: int = 3
) -> BaseClient:
    config = Config(
        # Some S3-compatible servers reject the CRC32 checksums newer boto3 sends by default.
        request_checksum_calculation=settings.s3_checksum,
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


class S3Store:
    """Objects in one bucket; keys already include ``prefix``. SHA-256 lives in ``x-amz-meta-sha256``."""

    def __init__(self, client: BaseClient, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        # botocore messages name the operation, code and URL, never the credentials.
        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            reason = f"{info.get('Code', 'unknown')} {info.get('Message', '')}".rstrip()
            raise StorageError(f"{action} s3://{self.bucket}/{key} failed: {reason}") from error
        except (BotoCoreError, Boto3Error) as error:
            raise StorageError(f"{action} s3://{self.bucket}/{key} failed: {error}") from error

    def _put(self, stored: StoredObject, upload: Callable[[], object]) -> StoredObject:
        if self.exists(stored.key) == stored:
            return stored
        with self._errors("upload", stored.key):
            self._abort_stale_uploads(stored.key)
            upload()
        after = self.exists(stored.key)
        if after != stored:
            raise StorageError(f"upload s3://{self.bucket}/{stored.key} did not verify: stored {after}, sent {stored}")
        return stored

    def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject:
        size, sha256 = sha256_file(path)
        extra = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
        return self._put(
            StoredObject(key, size, sha256),
            lambda: self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=TRANSFER),
        )

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        return self._put(
            StoredObject(key, len(data), sha256),
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, Metadata={"sha256": sha256}
            ),
        )

    def _abort_stale_uploads(self, key: str) -> None:
        """Abort multipart uploads of this key left by a killed worker (the caller holds its lease)."""
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])

    def exists(self, key: str) -> StoredObject | None:
        with self._errors("head", key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
        return StoredObject(key, head["ContentLength"], head.get("Metadata", {}).get("sha256", ""))

    def url(self, key: str, *, expires: int) -> str:
        with self._errors("presign", key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
            )

    def local_path(self, key: str) -> Path | None:
        return None

    def check(self) -> None:
        with self._errors("head bucket"):
            self.client.head_bucket(Bucket=self.bucket)


# --- choosing a store ------------------------------------------------------------


def open_store(settings: Settings) -> ArchiveStore:
    """``file://./rel`` or ``file:///abs/dir`` -> FileStore; ``s3://bucket/prefix`` -> S3Store."""
    url = settings.storage_url
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "file":
        path = unquote(url[len("file://") :])
        if not path:
            raise ValueError("RECORDER_STORAGE_URL file:// needs a directory, e.g. file:///srv/archive")
        return FileStore(Path(path))
    if scheme == "s3":
        parts = urlsplit(url)
        # The bucket is never echoed: a mistyped URL may hold credentials.
        if not _BUCKET.fullmatch(parts.netloc) or parts.query or parts.fragment:
            raise ValueError("RECORDER_STORAGE_URL must be s3://bucket/prefix with a plain bucket name")
        prefix = parts.path.strip("/")
        unsafe = [part for part in prefix.split("/") if prefix and key_segment(part) != part]
        if unsafe:
            raise ValueError(f"RECORDER_STORAGE_URL prefix parts must use only [A-Za-z0-9._-]: {unsafe}")
        return S3Store(s3_client(settings), parts.netloc, prefix)
    raise ValueError(f"RECORDER_STORAGE_URL must be s3://bucket/prefix or file:///dir, not a {scheme or 'bare'!r} URL")
