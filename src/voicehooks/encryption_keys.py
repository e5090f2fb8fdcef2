"""Where the encryption keys of a command come from: the setting, or a key file in embedded mode.

With VOICEHOOKS_DATABASE_URL unset (the embedded PostgreSQL, for development), a key is
generated once into the data directory, beside the database it protects, and reused by every
later command. With a database URL the operator must set VOICEHOOKS_ENCRYPTION_KEYS: a key
generated on one machine would not be known to the API and workers on others.
"""

import contextlib
import os
from pathlib import Path

from pydantic import SecretStr

from voicehooks.config import Settings
from voicehooks.encryption import EncryptionConfigError, generate_key

KEY_FILE_NAME = "encryption.key"

MISSING_WITH_DATABASE_URL = (
    "VOICEHOOKS_ENCRYPTION_KEYS is not set; it is required with VOICEHOOKS_DATABASE_URL "
    "(comma-separated base64 32-byte keys, e.g. from `openssl rand -base64 32`)"
)


def load_or_create_key(path: Path) -> str:
    """The key in `path`, or a new one written there (mode 0600) when there is none.

    The new key is written in full to a private temporary file first and linked into place,
    so two commands starting at once agree on one key and none reads a half-written file.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(generate_key() + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another command was first: use its key
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise EncryptionConfigError(f"the encryption key file {path} is empty")
    return key


def with_encryption_keys(settings: Settings, *, required: bool = True) -> Settings:
    """`settings` with the encryption keys the command is to use, checked.

    Raises EncryptionConfigError when they are malformed, or missing with a database URL while
    `required` (a command that never touches a signing key may run without them).
    """
    if settings.encryption_keys is not None:
        settings.key_ring()  # a malformed setting is refused now, not at the first request
        return settings
    if settings.database_url is None:
        key = load_or_create_key(settings.data_dir / KEY_FILE_NAME)
        resolved = settings.model_copy(update={"encryption_keys": SecretStr(key)})
        resolved.key_ring()
        return resolved
    if required:
        raise EncryptionConfigError(MISSING_WITH_DATABASE_URL)
    return settings
