"""Fast digests of array bytes: what tells a changed input or dataset from an unchanged one."""

from __future__ import annotations


def bytes_digest(*parts) -> str:
    """CRC-32 and Adler-32 of ``parts`` (bytes or arrays), 64 bits: a change detector, not a cryptographic
    hash; ten times faster than blake2b on this machine (3.9 and 3 GB/s against 0.4), which matters for
    an array of gigabytes."""
    import zlib

    crc, adler = 0, 1
    for part in parts:
        view = memoryview(part).cast("B") if not isinstance(part, bytes) else part
        crc, adler = zlib.crc32(view, crc), zlib.adler32(view, adler)
    return f"{crc:08x}{adler:08x}"
