"""Stack secrets encrypted here, in the engine's passphrase format, instead of by a CLI run.

`pulumi config set --secret` costs a CLI start and a key derivation (PBKDF2-SHA256, 1,000,000
iterations: ~0.35 s of CPU) on every deploy, since each CLI process derives the key again. The
format is small and fixed (pulumi sdk/go/common/resource/config/crypt.go and
pkg/secrets/passphrase/manager.go):

- a stack's `encryptionsalt` is `v1:<base64 salt>:v1:<base64 nonce>:<base64 AES-256-GCM of "pulumi">`,
  the check that a passphrase is the right one;
- a secret value is `v1:<base64 nonce>:<base64 AES-256-GCM ciphertext and tag>`;
- the key is PBKDF2-SHA256(passphrase, salt, 1,000,000 iterations, 32 bytes).

A process that deploys many stacks (reconcile, the signup worker) derives the key once: new
stacks get the salt of their config folder (`.encryptionsalt`, made once), which `pulumi stack
init` keeps, and every later secret is sealed here in microseconds. The passphrase is the same
for every stack of a backend, so one salt per folder protects as much as one per stack. Nothing
here weakens the engine's format: same KDF, same cipher; the engine decrypts what this writes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ITERATIONS = 1_000_000  # the engine's, so the keys are the ones it derives
KEY_BYTES = 32
SALT_BYTES = 8
NONCE_BYTES = 12
CHECK_PLAINTEXT = "pulumi"
SALT_FILE = ".encryptionsalt"


@dataclass(frozen=True)
class SealedValue:
    """A secret sealed for the stacks of one salt: write it only where `salt` is the stack's."""

    salt: str
    value: str = field(repr=False)


class WrongPassphrase(ValueError):
    """The passphrase does not open this salt's check value (or the salt is malformed)."""


@functools.lru_cache(maxsize=32)
def _derive(passphrase: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, ITERATIONS, KEY_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Sealer:
    """Encrypts and decrypts stack secrets for one passphrase and salt (`state`, the value of a
    stack config file's `encryptionsalt`)."""

    state: str
    key: bytes = field(repr=False)

    def seal(self, value: str) -> str:
        """`value` encrypted as the engine writes a `secure:` config value."""
        nonce = os.urandom(NONCE_BYTES)
        return f"v1:{_b64(nonce)}:{_b64(AESGCM(self.key).encrypt(nonce, value.encode(), None))}"

    def unseal(self, sealed: str) -> str:
        """The plaintext of a `secure:` value sealed with this key; WrongPassphrase otherwise."""
        parts = sealed.split(":")
        if len(parts) != 3 or parts[0] != "v1":
            raise WrongPassphrase("not a v1 secret value")
        try:
            nonce, data = base64.b64decode(parts[1]), base64.b64decode(parts[2])
            return AESGCM(self.key).decrypt(nonce, data, None).decode()
        except (InvalidTag, ValueError) as e:
            raise WrongPassphrase("the passphrase does not decrypt this value") from e


def sealer_for(passphrase: str, state: str) -> Sealer:
    """The Sealer of an existing salt, checked against the passphrase (the key is derived once
    per process for each passphrase and salt)."""
    version, _, rest = state.partition(":")
    salt_b64, _, check = rest.partition(":")
    if version != "v1" or not salt_b64 or not check:
        raise WrongPassphrase("malformed encryption salt")
    try:
        salt = base64.b64decode(salt_b64, validate=True)
    except ValueError as e:
        raise WrongPassphrase("malformed encryption salt") from e
    sealer = Sealer(state, _derive(passphrase, salt))
    if sealer.unseal(check) != CHECK_PLAINTEXT:
        raise WrongPassphrase("the passphrase does not match this salt")
    return sealer


def new_state(passphrase: str) -> str:
    """A fresh salt and its check value, as `pulumi stack init` makes them."""
    salt = os.urandom(SALT_BYTES)
    check = Sealer("", _derive(passphrase, salt)).seal(CHECK_PLAINTEXT)
    return f"v1:{_b64(salt)}:{check}"


_folder_lock = threading.Lock()


def folder_sealer(passphrase: str, config_dir: Path) -> Sealer:
    """The Sealer for new stacks whose config lives in `config_dir`: the folder's salt, made once
    (atomically: concurrent processes all end up with the first one written)."""
    path = config_dir / SALT_FILE
    with _folder_lock:
        if not path.exists():
            config_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{SALT_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(new_state(passphrase) + "\n")
            try:
                os.link(tmp, path)  # fails if another process made it first: theirs is kept
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return sealer_for(passphrase, path.read_text().strip())
