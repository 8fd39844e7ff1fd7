#!/usr/bin/env python3
"""Decodes a PNG (Python standard library only) and prints what the chart
specs check, as JSON: size, background, pixels that differ from it, the
distinct colours, and how many pixels have each colour asked for.

    png.py FILE [--region X0,Y0,X1,Y1] [--color RRGGBB ...] [--tolerance N]

Handles 8-bit greyscale, RGB, palette, grey+alpha and RGBA images without
interlacing (what Chromium writes); anything else is refused."""
import json
import struct
import sys
import zlib
from collections import Counter

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunks(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError("bad CRC in chunk %r" % kind)
        yield kind, body
        pos += 12 + length


def unfilter(raw, width, height, bpp):
    stride = width * bpp
    rows = []
    prev = bytearray(stride)
    pos = 0
    for _ in range(height):
        kind = raw[pos]
        line = bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc:
                    pred = a
                elif pb <= pc:
                    pred = b
                else:
                    pred = c
                line[i] = (line[i] + pred) & 0xFF
        elif kind != 0:
            raise ValueError("unknown filter type %d" % kind)
        rows.append(line)
        prev = line
    return rows


def decode(path):
    with open(path, "rb") as f:
        data = f.read()
    header, idat, palette = None, [], None
    for kind, body in chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = [tuple(body[i:i + 3]) for i in range(0, len(body), 3)]
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in CHANNELS or interlace:
        raise ValueError("unsupported PNG: depth %d, colour type %d, interlace %d" % (depth, color, interlace))
    bpp = CHANNELS[color]
    rows = unfilter(zlib.decompress(b"".join(idat)), width, height, bpp)
    pixels = []
    for line in rows:
        out = []
        for x in range(width):
            px = line[x * bpp:(x + 1) * bpp]
            if color == 0 or color == 4:
                rgb = (px[0], px[0], px[0])
            elif color == 3:
                rgb = palette[px[0]]
            else:
                rgb = (px[0], px[1], px[2])
            if color in (4, 6):  # composite on white, as a page shows it
                alpha = px[-1]
                rgb = tuple((v * alpha + 255 * (255 - alpha)) // 255 for v in rgb)
            out.append(rgb)
        pixels.append(out)
    return width, height, pixels


def main(argv):
    path, region, wanted, tolerance = argv[0], None, [], 12
    i = 1
    while i < len(argv):
        if argv[i] == "--region":
            region = [int(v) for v in argv[i + 1].split(",")]
            i += 2
        elif argv[i] == "--color":
            wanted.append(argv[i + 1].lstrip("#").upper())
            i += 2
        elif argv[i] == "--tolerance":
            tolerance = int(argv[i + 1])
            i += 2
        else:
            raise SystemExit("unknown argument " + argv[i])
    width, height, pixels = decode(path)
    x0, y0, x1, y1 = region or (0, 0, width, height)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    counts = Counter()
    for y in range(y0, y1):
        counts.update(pixels[y][x0:x1])
    background = counts.most_common(1)[0][0] if counts else (255, 255, 255)
    total = sum(counts.values())
    nonbg = sum(n for rgb, n in counts.items() if sum(abs(a - b) for a, b in zip(rgb, background)) > 24)
    # colours, not shades of grey, that cover a visible area
    colored = sorted(
        "%02X%02X%02X" % rgb for rgb, n in counts.items() if n >= 40 and max(rgb) - min(rgb) > 40
    )
    found = {}
    for hexcode in wanted:
        target = tuple(int(hexcode[k:k + 2], 16) for k in (0, 2, 4))
        found[hexcode] = sum(
            n for rgb, n in counts.items() if all(abs(a - b) <= tolerance for a, b in zip(rgb, target))
        )
    print(json.dumps({
        "width": width, "height": height, "pixels": total,
        "background": "%02X%02X%02X" % background, "nonbackground": nonbg,
        "colored": colored, "counts": found,
    }))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError, zlib.error) as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(1)
