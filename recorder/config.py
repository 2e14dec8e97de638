"""One typed settings object, read once from the environment (``RECORDER_*``).

A ``config/*.env`` file named by ``RECORDER_ENV_FILE`` may supply defaults; the
environment always wins.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[tuple[str, ...], NoDecode]


class ConfigError(Exception):
    """The settings cannot run a service (e.g. no callback key)."""


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
    download_timeout: float = Field(30, gt=0)
    download_workers: int = Field(4, ge=1)
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

    @field_validator("callback_keys", "media_hosts", "api_tokens", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
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
        return f"Settings(database_url={self.database_url!r}, storage_url={self.storage_url!r})"
