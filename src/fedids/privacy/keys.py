"""Long-term key files for the encrypted privacy modes (``fedids keys init``).

Layout written by :func:`init_keys` into ``out_dir``::

    client/he_secret_context.bin   clients' TenSEAL context with the secret key   (0600, dir 0700)
    server/he_public_context.bin   server's public-only context                   (0644)
    keys.json                      mode, scheme, parameters, SHA-256 of the public context

Every ``he`` mode gets a BFV key set (:mod:`fedids.privacy.he_secagg`): clients encrypt fixed-point
vectors (``he``) or masked fixed-point vectors (``he+secagg``). ``secagg`` alone needs no key files: its
X25519 keys are fresh every round. Hand ``client/`` to the clients out of band and ``server/`` to
the server; the server's copy cannot decrypt. Nothing here logs or prints key material.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedids.errors import FedidsError, InputError

SECRET_CONTEXT_FILE = "client/he_secret_context.bin"
PUBLIC_CONTEXT_FILE = "server/he_public_context.bin"
MANIFEST_FILE = "keys.json"
PRIVACY_COMPONENTS = ("he", "secagg", "dp")


@dataclass(frozen=True)
class KeyFiles:
    """Paths written by :func:`init_keys` (no key material)."""

    secret_context: Path
    public_context: Path
    manifest: Path
    scheme: str
    public_sha256: str


def parse_privacy_mode(mode: str) -> frozenset[str]:
    """Split a mode such as ``"he+secagg+dp"`` into its components; ``"none"`` is empty.

    Raises
    ------
    FedidsError
        Unknown or repeated components.
    """
    if mode == "none":
        return frozenset()
    parts = mode.split("+")
    unknown = [p for p in parts if p not in PRIVACY_COMPONENTS]
    if unknown or len(set(parts)) != len(parts) or not parts:
        raise FedidsError(
            f"privacy mode {mode!r}: expected 'none' or a '+'-joined combination "
            f"of {', '.join(PRIVACY_COMPONENTS)}"
        )
    return frozenset(parts)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically; the file is created with ``mode`` (0600 secrets never exist wider)."""
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; widen back to exactly `mode`
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(tmp, path)


def init_keys(out_dir: str | Path, mode: str, *, force: bool = False) -> KeyFiles:
    """Create a key set for ``mode`` and write it to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Directory to create or fill.
    mode : str
        Privacy mode (``he``, ``he+dp``, ``he+secagg``, ``he+secagg+dp``).
    force : bool
        Replace existing key files (otherwise they are never overwritten).

    Returns
    -------
    KeyFiles
        The paths written and the public context's SHA-256.

    Raises
    ------
    FedidsError
        The mode needs no key files, or is unknown.
    InputError
        A key file exists and ``force`` is false.
    """
    components = parse_privacy_mode(mode)
    if "he" not in components:
        raise FedidsError(
            f"privacy mode {mode!r} needs no key files (secagg keys are fresh every round; dp has none)"
        )
    out = Path(out_dir)
    secret_path, public_path = out / SECRET_CONTEXT_FILE, out / PUBLIC_CONTEXT_FILE
    manifest_path = out / MANIFEST_FILE
    if not force:
        for path in (secret_path, public_path, manifest_path):
            if path.exists():
                raise InputError(f"{path}: key file exists; use --force to replace the key set")
    # Every he mode seals BFV fixed-point vectors (fedids.federation.private says why); the CKKS module
    # (fedids.privacy.he) stays for its measurements and the ciphertext container both schemes share.
    from fedids.privacy.he_secagg import (
        BFV_COEFF_MOD_BIT_SIZES,
        BFV_PLAIN_MODULUS,
        BFV_POLY_MODULUS_DEGREE,
        create_bfv_keys,
    )

    keys = create_bfv_keys()
    params: dict[str, object] = {
        "poly_modulus_degree": BFV_POLY_MODULUS_DEGREE,
        "coeff_mod_bit_sizes": list(BFV_COEFF_MOD_BIT_SIZES),
        "plain_modulus": BFV_PLAIN_MODULUS,
    }
    secret_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(secret_path.parent, 0o700)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(keys.public_context).hexdigest()
    _write_file(secret_path, keys.secret_context, 0o600)
    _write_file(public_path, keys.public_context, 0o644)
    manifest = {
        "format": 1,
        "mode": mode,
        "scheme": keys.scheme,
        "parameters": params,
        "public_context_sha256": digest,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {"client": SECRET_CONTEXT_FILE, "server": PUBLIC_CONTEXT_FILE},
    }
    _write_file(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode(), 0o644)
    return KeyFiles(secret_path, public_path, manifest_path, keys.scheme, digest)


def _read(path: str | Path) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: key file does not exist")
    data = path.read_bytes()
    if not data:
        raise InputError(f"{path}: key file is empty")
    return path, data


def load_secret_context(path: str | Path) -> bytes:
    """Read the clients' context (``client/he_secret_context.bin``).

    Returns
    -------
    bytes
        The serialised context, checked to parse and to hold a secret key.

    Raises
    ------
    InputError
        Missing, empty, corrupt, readable by group or others, or without a secret key.
    """
    from fedids.privacy.he import parse_secret_context

    path, data = _read(path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise InputError(
            f"{path}: permissions {stat.S_IMODE(path.stat().st_mode):04o} are too "
            f"open for a secret key; run chmod 600"
        )
    try:
        parse_secret_context(data)
    except ValueError as err:  # the message names the problem, never key bytes
        raise InputError(f"{path}: {err}") from None
    return data


def load_public_context(path: str | Path) -> bytes:
    """Read the server's context (``server/he_public_context.bin``).

    Raises
    ------
    InputError
        Missing, empty, corrupt, or holding a secret key (the server must never have one).
    """
    from fedids.privacy.he import parse_public_context

    path, data = _read(path)
    try:
        parse_public_context(data)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None
    return data


def load_key_manifest(path: str | Path) -> dict[str, object]:
    """Read ``keys.json``; raises InputError when missing or not a key manifest."""
    path, data = _read(path)
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != 1 or "scheme" not in manifest:
        raise InputError(f"{path}: not a fedids key manifest")
    return manifest
