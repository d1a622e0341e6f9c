"""Content hashes: what backups, manifests and the changed-under-us checks compare."""

from __future__ import annotations


def sha256(data: bytes) -> str:
    import hashlib  # not at start-up: a dry run may never need it

    return hashlib.sha256(data).hexdigest()
