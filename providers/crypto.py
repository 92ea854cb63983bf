"""Provider credentials at rest: Fernet, with key rotation.

`EP_ENCRYPTION_KEYS` holds one or more Fernet keys, comma-separated: the first
encrypts, every one decrypts, so a new key is put first, `rotate_credentials`
re-encrypts, and the old key is dropped afterwards. Without it a key is derived
from SECRET_KEY, so changing SECRET_KEY then needs the old value put in
EP_ENCRYPTION_KEYS (as a derived key) first.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def derive_key(secret: str) -> str:
    digest = hashlib.sha256(("ep-credentials:" + secret).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def _current() -> MultiFernet:
    keys = tuple(settings.EP_ENCRYPTION_KEYS) or (derive_key(settings.SECRET_KEY),)
    return _fernet(keys)


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        # Never include the token: it is the secret's ciphertext.
        raise ValueError("stored credential cannot be decrypted with the configured keys") from None


def rotate(token: str) -> str:
    """Re-encrypt under the first key."""
    return _current().rotate(token.encode()).decode() if token else ""


# Other apps' encrypted columns, (model, field), registered from their AppConfig.ready()
# (tools: a tool server's secrets), so `rotate_credentials` re-encrypts them too
# without this layer importing theirs.
ROTATED_ELSEWHERE: list[tuple[type, str]] = []


def rotation_register(model: type, field: str) -> None:
    if (model, field) not in ROTATED_ELSEWHERE:
        ROTATED_ELSEWHERE.append((model, field))
