"""A small PNG reader for tests (8-bit RGB or RGBA, not interlaced): the signature, IHDR and pixels.

Written here so checking the admin's PNG exports needs no imaging library; it decodes every filter
type, so a file that passes really is a picture of the stated size.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    channels: int  # 3 (RGB) or 4 (RGBA)
    rows: list[bytes]

    def colours(self) -> Counter[tuple[int, int, int]]:
        """How many pixels have each RGB colour."""
        n, out = self.channels, Counter()
        for row in self.rows:
            out.update(zip(row[0::n], row[1::n], row[2::n], strict=True))
        return out


def read_png(data: bytes) -> Png:
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG: bad signature")
    pos, header, idat = 8, b"", bytearray()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError("pixel data does not match the size in IHDR")
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        previous = _unfilter(kind, line, previous, bpp)
        rows.append(previous)
    return Png(width, height, bpp, rows)


def _unfilter(kind: int, data: bytes, prev: bytes, bpp: int) -> bytes:
    if kind == 0:
        return data
    if kind == 2:  # the filter Chromium's encoder uses: fast path
        return bytes((x + y) & 255 for x, y in zip(data, prev, strict=True))
    line = bytearray(data)
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            line[i] = (line[i] + paeth(a, b, c)) & 255
        else:
            raise ValueError(f"unknown filter type {kind}")
    return bytes(line)


def paeth(a: int, b: int, c: int) -> int:
    """The PNG spec's predictor: whichever of left, up, up-left is closest to left + up - up-left."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c
