"""sha256 from the interpreter's built-in module: importing hashlib loads OpenSSL (~3 ms of start-up)."""

try:
    from _sha256 import sha256  # CPython 3.10-3.11
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
