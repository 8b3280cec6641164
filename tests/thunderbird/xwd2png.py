#!/usr/bin/env python3
"""xwd (X Window Dump, ZPixmap, 24/32 bits per pixel, as `xwd -root` writes on Xvfb) to PNG,
with the standard library only. Usage: xwd2png.py IN.xwd OUT.png"""
import struct
import sys
import zlib


def main(src, dst):
    data = open(src, "rb").read()
    hdr = struct.unpack(">25I", data[:100])
    header_size, _version, _fmt, depth, width, height = hdr[:6]
    byte_order, bpp, bytes_per_line = hdr[7], hdr[11], hdr[12]
    red_mask, green_mask, blue_mask = hdr[14], hdr[15], hdr[16]
    ncolors = hdr[19]
    if bpp not in (24, 32):
        sys.exit(f"unsupported bits per pixel {bpp} (depth {depth})")
    off = header_size + ncolors * 12
    step = bpp // 8
    endian = "<" if byte_order == 0 else ">"

    def shift(mask):
        s = 0
        while mask and not mask & 1:
            mask >>= 1
            s += 1
        return s

    rs, gs, bs = shift(red_mask), shift(green_mask), shift(blue_mask)
    rows = []
    for y in range(height):
        line = data[off + y * bytes_per_line: off + y * bytes_per_line + width * step]
        out = bytearray(b"\x00")
        for x in range(width):
            px = line[x * step: x * step + step]
            v = struct.unpack(endian + "I", px if step == 4 else (px + b"\x00" if endian == "<" else b"\x00" + px))[0]
            out += bytes(((v & red_mask) >> rs, (v & green_mask) >> gs, (v & blue_mask) >> bs))
        rows.append(bytes(out))

    def chunk(kind, body):
        c = struct.pack(">I", len(body)) + kind + body
        return c + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
    png += chunk(b"IEND", b"")
    open(dst, "wb").write(png)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
