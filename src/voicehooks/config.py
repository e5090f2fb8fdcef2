"""Settings, read from VOICEHOOKS_* environment variables."""

import ipaddress
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from voicehooks.encryption import EncryptionConfigError, KeyRing

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("voicehooks", appauthor=False)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOICEHOOKS_", extra="ignore")

    database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    ingest_token: SecretStr | None = None
    allow_http_targets: bool = False
    allowed_target_networks: Annotated[list[IPNetwork], NoDecode] = []
    delivery_timeout: float = Field(default=10.0, gt=0, le=300)
    retry_delays: Annotated[list[float], NoDecode] = [5, 30, 120, 600, 1800, 3600, 7200, 14400]
    auto_disable_after: float = Field(default=432000, ge=0)
    key_rotation_overlap: float = Field(default=86400, ge=0)
    retention_days: float = Field(default=30, gt=0)
    # Parsed by key_ring(), not here: a validation error would echo the value.
    encryption_keys: SecretStr | None = None
    # The customer portal (SPEC §6): base of the links handed out, and who may frame its pages.
    public_url: str = "http://127.0.0.1:8000"
    portal_frame_ancestors: str = "'none'"

    # Processes and dispatcher tuning: not in the spec's table, defaults fit a small machine.
    worker_processes: int = Field(default=1, ge=1, le=64)
    api_processes: int = Field(default=1, ge=1, le=64)
    max_in_flight: int = Field(default=256, ge=1)
    max_in_flight_per_host: int = Field(default=64, ge=1)
    poll_interval: float = Field(default=1.0, gt=0)
    lease_margin: float = Field(default=30.0, ge=1)
    housekeeping_interval: float = Field(default=60.0, gt=0)
    log_level: str = "INFO"

    @field_validator("allowed_target_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            return [ipaddress.ip_network(str(item), strict=False) for item in value]
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _parse_delays(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("retry_delays")
    @classmethod
    def _non_negative_delays(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must not be negative")
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError("must be an absolute http(s) URL without a query")
        return value.strip().rstrip("/")

    @field_validator("portal_frame_ancestors")
    @classmethod
    def _one_csp_directive(cls, value: str) -> str:
        # Goes into the Content-Security-Policy header: no way out of its one directive.
        if not value.strip() or any(c in value for c in ";,\r\n"):
            raise ValueError("sources separated by spaces, without ';' or ','")
        return value.strip()

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    def key_ring(self) -> KeyRing:
        """The keys of signing keys at rest; EncryptionConfigError when unset or malformed."""
        if self.encryption_keys is None:
            raise EncryptionConfigError("VOICEHOOKS_ENCRYPTION_KEYS is not set")
        return KeyRing.parse(self.encryption_keys.get_secret_value())
