"""OCR worker process: loads RapidOCR once, then answers requests on stdin/stdout.

Run by documents.parsers.ocr as a separate process so that a page that takes too long can be
stopped (killed) without touching the caller, and so the model's memory is not in the caller.
Protocol (both ways): 4-byte big-endian length, then that many bytes. A request is a JSON header
{"height", "width"} followed by a frame of height*width*3 RGB bytes; a reply is JSON.
Imports nothing from the project: it is started as a plain script.
"""

import json
import os
import struct
import sys


def _read_frame(stream) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


def _write(stream, payload: dict) -> None:
    body = json.dumps(payload).encode("utf-8")
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def main() -> None:
    # The protocol owns stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    try:
        import numpy as np
        from rapidocr import RapidOCR

        engine = RapidOCR(params={"Global.log_level": "error"})
    except Exception as exc:  # reported to the caller, which raises it as a clear error
        _write(out, {"error": f"the OCR model could not be loaded ({type(exc).__name__}: {exc})"})
        return
    _write(out, {"ready": True})
    while True:
        header = _read_frame(stdin)
        pixels = _read_frame(stdin) if header is not None else None
        if pixels is None:
            return
        try:
            shape = json.loads(header)
            image = np.frombuffer(pixels, dtype=np.uint8).reshape(shape["height"], shape["width"], 3)
            # RapidOCR takes OpenCV's channel order.
            result = engine(np.ascontiguousarray(image[:, :, ::-1]))
            lines = []
            if result.txts:
                for text, score, box in zip(result.txts, result.scores, result.boxes, strict=False):
                    xs = [float(p[0]) for p in box]
                    ys = [float(p[1]) for p in box]
                    lines.append([text, float(score), [min(xs), min(ys), max(xs), max(ys)]])
            _write(out, {"lines": lines})
        except Exception as exc:
            _write(out, {"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
