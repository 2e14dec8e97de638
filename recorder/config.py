"""One typed settings object, read once from the environment (``RECORDER_*``).

A ``config/*.env`` file named by ``RECORDER_ENV_FILE`` may supply defaults; the
environment always wins.
"""

from __future__ import annotations

import os
import posixpath
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from recorder.errors import first_problem
from recorder.events import is_http_url

CommaList = Annotated[tuple[str, ...], NoDecode]
# ``<server path prefix>=<base URL>`` pairs, comma-separated in the environment.
PathBases = Annotated[tuple[tuple[str, str], ...], NoDecode]


class ConfigError(Exception):
    """The settings cannot run a service (e.g. no callback key)."""

    @classmethod
    def explaining(cls, error: ValidationError) -> ConfigError:
        """The first bad setting by its variable's name; never its value, which may be a secret."""
        name, _, problem = first_problem(error).partition(": ")  # a setting's field is its variable's name
        return cls(f"RECORDER_{name.upper()}: {problem}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECORDER_",
        env_file=os.environ.get("RECORDER_ENV_FILE"),
        frozen=True,
        extra="ignore",
    )

    database_url: str = "sqlite:///./data/recorder.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    storage_url: str = "file://./data/archive"
    s3_endpoint_url: str | None = None
    # "when_required" keeps boto3 from sending CRC32 checksums that some
    # S3-compatible servers (older COS, MinIO) reject; "when_supported" is boto3's default.
    s3_checksum: str = "when_required"
    callback_keys: CommaList = ()
    allow_unsigned: bool = False
    media_hosts: CommaList = ("*.myqcloud.com", "*.qcloudimg.com")
    reconnect_window: float = Field(300, ge=0)
    settle_seconds: float = Field(600, ge=0)
    api_tokens: CommaList = ()
    work_dir: Path = Path("./data/work")
    clock_skew: float = Field(30, ge=0)
    sweep_seconds: float = Field(60, gt=0)
    lease_seconds: float = Field(300, gt=0)
    # Transient failures (downloads, storage) are retried with backoff for at
    # least this long before a broadcast is marked failed.
    retry_seconds: float = Field(600, ge=0)
    max_attempts: int = Field(8, ge=1)
    # A request body must arrive within this many seconds (slow-drip clients are cut off).
    body_timeout: float = Field(10, gt=0)
    download_timeout: float = Field(30, gt=0)
    download_workers: int = Field(4, ge=1)
    # Fetch and probe each fragment when its callback is handled, on the prefetch queue, and keep
    # it in the work dir for the stitch; off: the stitch fetches and probes every fragment itself.
    prefetch: bool = True
    ffmpeg_timeout: float = Field(3600, gt=0)
    url_expiry_seconds: int = Field(3600, gt=0)
    # Output duration tolerance: absolute seconds plus a fraction of the total.
    duration_tolerance: float = Field(0.5, ge=0)
    duration_tolerance_ratio: float = Field(0.001, ge=0)
    max_join_drift: float = Field(0.1, gt=0)
    # "auto": MP4 for video, M4A for audio-only; "keep": the fragments' own container.
    output_container: Literal["auto", "keep"] = "auto"
    # "remux": HLS becomes MP4; "playlist": one VOD playlist with EXT-X-DISCONTINUITY at the joins.
    hls_output: Literal["remux", "playlist"] = "remux"
    # A broken fragment fails its broadcast ("fail") or is left out with the hole recorded ("skip").
    broken_fragments: Literal["fail", "skip"] = "fail"
    # Publish an archive that fails verification as "suspect" instead of failing the broadcast.
    publish_suspect: bool = False
    # Other sources: TRTC cloud recording keys, and tokens for servers that cannot sign (SRS, nginx-rtmp).
    trtc_keys: CommaList = ()
    # Where TRTC cloud-storage files (event 310) can be downloaded: a URL with
    # {SdkAppId}, {RoomId}, {TaskId} and {FileName}; unset, those files are only stored.
    trtc_storage_url: str | None = None
    source_tokens: CommaList = ()
    source_media_base: PathBases = ()

    @field_validator("callback_keys", "media_hosts", "api_tokens", "trtc_keys", "source_tokens", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("source_media_base", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(tuple(entry.partition("=")[::2]) for entry in value.split(",") if entry.strip())
        return value

    @field_validator("source_media_base")
    @classmethod
    def _check_bases(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        pairs = tuple((prefix.strip(), base.strip()) for prefix, base in value)
        for prefix, base in pairs:
            if not prefix.startswith("/") or not is_http_url(base):
                raise ValueError(f"bad entry {prefix}={base}: use <absolute server path prefix>=<http(s) base URL>")
        return tuple((posixpath.normpath(prefix), base.rstrip("/")) for prefix, base in pairs)

    @field_validator("trtc_storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is not None and (not is_http_url(value) or "{FileName}" not in value):
            raise ValueError("must be an http(s) URL containing {FileName}")
        return value

    @cached_property
    def admin_tokens(self) -> frozenset[str]:
        return frozenset(t for t in self.api_tokens if not t.endswith(":read"))

    @cached_property
    def read_tokens(self) -> frozenset[str]:
        return frozenset(t.removesuffix(":read") for t in self.api_tokens) | self.admin_tokens

    def require_callback_keys(self) -> None:
        """Refuse to run a receiver that would accept anything."""
        if not self.callback_keys and not self.allow_unsigned:
            raise ConfigError(
                "RECORDER_CALLBACK_KEYS is empty: set the Tencent callback key(s), "
                "or RECORDER_ALLOW_UNSIGNED=1 to accept unsigned callbacks (testing only)"
            )

    def __repr__(self) -> str:  # keys and tokens never reach a log line
        database = make_url(self.database_url).render_as_string(hide_password=True)
        return f"Settings(database_url={database!r}, storage_url={self.storage_url!r})"
