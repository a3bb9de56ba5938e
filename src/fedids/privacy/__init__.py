"""Privacy primitives for federated aggregation, transport-agnostic (no Flower import).

Everything works on flat update vectors (``numpy`` float32, shape ``(d,)``) and produces
``bytes`` or flat ``dict[str, int | bytes]`` messages that a transport moves unchanged.

Modules
-------
he
    CKKS aggregation (TenSEAL): clients encrypt, the server adds with a public-only context,
    clients decrypt the sum (``he`` mode).
secagg
    Secure aggregation after Bonawitz et al. 2017: X25519, Shamir shares, ChaCha20 masks over
    quantised ``uint32`` updates; tolerates 30% dropouts (``secagg`` mode).
he_secagg
    SecAgg whose masked inputs are BFV-encrypted: neither the server nor a colluding client sees
    an individual update, and the server does not see the aggregate (``he+secagg``).
dp
    Client-level DP: clipping, (distributed) Gaussian noise, RDP accounting with
    ``dp_accounting``, noise calibration and a budget guard (``dp``).
keys
    Key files for the HE modes (``fedids keys init``): 0600 secrets, public-only server copy.

The names below are re-exported lazily, so importing one module does not load the others'
libraries (TenSEAL, dp_accounting).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "he": (
        "HEKeys",
        "create_he_keys",
        "encrypt_update",
        "EncryptedSum",
        "decrypt_sum",
        "InvalidCiphertextError",
    ),
    "secagg": (
        "SecAggConfig",
        "SecAggClient",
        "SecAggServer",
        "SecAggAbort",
        "SecAggError",
        "InvalidMessageError",
        "quantize",
        "dequantize_sum",
        "simulate_round",
    ),
    "he_secagg": ("create_bfv_keys", "HESecAggClient", "HESecAggServer", "decrypt_masked_sum"),
    "dp": (
        "clip_update",
        "add_gaussian_noise",
        "distributed_noise_std",
        "PrivacyAccountant",
        "PrivacyBudgetExceeded",
        "calibrate_noise_multiplier",
    ),
    "keys": ("init_keys", "load_secret_context", "load_public_context", "parse_privacy_mode"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
