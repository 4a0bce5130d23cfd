"""Inflating compressed batches with the codecs pyarrow ships (gzip, snappy incl. xerial framing, lz4, zstd):
no codec package needed; kafka-python here can decode only gzip."""

from __future__ import annotations

_XERIAL = b"\x82SNAPPY\x00"


def _inflate(codec: int, data: bytes) -> bytes:
    """Decompress one batch's records with the codecs pyarrow ships (no extra packages)."""
    import pyarrow as pa

    if codec == 1:
        import zlib

        d = zlib.decompressobj(wbits=47)  # gzip or zlib header
        out = d.decompress(data)
        while d.unused_data:  # concatenated gzip members
            rest = d.unused_data
            d = zlib.decompressobj(wbits=47)
            out += d.decompress(rest)
        return out
    if codec == 2:
        if data.startswith(_XERIAL):  # Java client framing: [len][raw snappy block]...
            out, p = [], 16
            while p + 4 <= len(data):
                ln = int.from_bytes(data[p : p + 4], "big")
                out.append(_snappy_raw(data[p + 4 : p + 4 + ln]))
                p += 4 + ln
            return b"".join(out)
        return _snappy_raw(data)
    if codec in (3, 4):
        name = "lz4" if codec == 3 else "zstd"  # LZ4 frame format, zstd frame
        return pa.input_stream(pa.py_buffer(data), compression=name).read()
    raise ValueError(f"unknown compression codec {codec}")


def _snappy_raw(block: bytes) -> bytes:
    import pyarrow as pa

    n, shift, i = 0, 0, 0
    while True:  # the uncompressed length leads a raw snappy block as a varint
        if i >= len(block) or shift > 35:
            raise ValueError("snappy block without a length")
        b = block[i]
        n |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += 7
    return pa.decompress(block, decompressed_size=n, codec="snappy", asbytes=True)


_CODEC_NAMES = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

