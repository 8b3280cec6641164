#!/usr/bin/env python3
"""Writes the add-in's PNG icons (a green rounded square with a white check mark, the same
picture as clients/thunderbird/icons/eds.svg) in the sizes Office asks for. Standard library
only; run from anywhere: python3 clients/outlook/make-icons.py"""
import math
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
GREEN = (0x2E, 0x7D, 0x32)
WHITE = (0xFF, 0xFF, 0xFF)


def seg_dist(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def pixel(x, y):
    """RGBA of the 96x96 design at (x, y)."""
    # rounded square 8..88, radius 14
    cx, cy = min(max(x, 22), 74), min(max(y, 22), 74)
    if math.hypot(x - cx, y - cy) > 14 or not (8 <= x <= 88 and 8 <= y <= 88):
        return (0, 0, 0, 0)
    d = min(seg_dist(x, y, 28, 50, 41, 63), seg_dist(x, y, 41, 63, 68, 33))
    return (*WHITE, 255) if d <= 5 else (*GREEN, 255)


def png(size):
    rows = []
    s = 4  # 4x4 supersampling
    for j in range(size):
        row = bytearray(b"\x00")
        for i in range(size):
            acc = [0, 0, 0, 0]
            for sj in range(s):
                for si in range(s):
                    p = pixel((i + (si + 0.5) / s) * 96 / size, (j + (sj + 0.5) / s) * 96 / size)
                    for k in range(3):
                        acc[k] += p[k] * p[3]
                    acc[3] += p[3]
            a = acc[3] / (s * s)
            rgb = [int(round(acc[k] / acc[3])) if acc[3] else 0 for k in range(3)]
            row += bytes(rgb + [int(round(a))])
        rows.append(bytes(row))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


for n in (16, 32, 64, 80, 128):
    with open(os.path.join(HERE, f"icon-{n}.png"), "wb") as f:
        f.write(png(n))
