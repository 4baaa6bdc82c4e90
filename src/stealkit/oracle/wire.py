"""The HTTP API's wire format, shared by ``stealkit serve`` and ``HttpOracle``.

A query body carries its (N, C, H, W) batch in exactly one of three forms:

- ``inputs``: nested JSON numbers;
- ``npy``: base64 of a ``.npy`` file (float32 or float64, no pickles), the compact form;
- ``png``: a list of base64 PNG images, 8-bit, read as value / 255.

An answer carries ``values`` as nested JSON numbers, or (``"encoding": "npy"`` in the query) as
``npy``: base64 of a float32 ``.npy`` (int64 for labels), so floats travel bit for bit.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stealkit.errors import QueryError
from stealkit.oracle.response import OutputKind, Response


class WireError(QueryError):
    """A field of a query body cannot be read; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def encode_npy(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _b64(s: str, field: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(field, "is not valid base64") from None


def decode_npy(s: str, field: str = "npy") -> np.ndarray:
    """The array a base64 ``.npy`` string holds; WireError naming ``field`` when it is junk."""
    raw = _b64(s, field)
    try:
        a = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise WireError(field, f"is base64 but not a .npy array ({e})") from None
    if not isinstance(a, np.ndarray):
        raise WireError(field, "holds an archive, not one .npy array")
    return a


def decode_png(
    images: list[str], field: str = "png", size: tuple[int, int] | None = None
) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1] from base64 PNGs of one size (grey or RGB); with ``size``
    (width, height), an image of another size is refused before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for i, s in enumerate(images):
        raw = _b64(s, f"{field}.{i}")
        try:
            img = Image.open(io.BytesIO(raw))
            if img.format != "PNG":
                raise WireError(f"{field}.{i}", f"is a {img.format} image, not a PNG")
            if size is not None and img.size != size:
                raise WireError(
                    f"{field}.{i}",
                    f"is {img.size[0]}x{img.size[1]}; this API takes {size[0]}x{size[1]}",
                )
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise WireError(f"{field}.{i}", "is not a readable PNG image") from None
        pic: Image.Image = img
        if img.mode not in ("L", "RGB"):
            pic = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK") else "L")
        a = np.asarray(pic, dtype=np.float32) / 255.0
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if not out:
        raise WireError(field, "holds no images")
    if len({a.shape for a in out}) > 1:
        raise WireError(field, f"images differ in size: {sorted({a.shape for a in out})}")
    return np.stack(out)


def encode_png(x: Tensor) -> list[str]:
    """Base64 PNGs of a (N, C, H, W) batch in [0, 1] (rounded to 8 bits)."""
    from PIL import Image

    a = (x.clamp(0, 1).mul(255).round().to(torch.uint8)).numpy()
    out = []
    for img in a:
        buf = io.BytesIO()
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, "PNG")
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def batch_from_body(
    body: dict[str, Any], size: tuple[int, int] | None = None
) -> tuple[Tensor, str]:
    """The float32 batch of a query body and the field it came in; WireError otherwise.
    ``size`` (width, height) lets PNGs of the wrong size be refused before decoding."""
    given = [f for f in ("inputs", "npy", "png") if body.get(f) is not None]
    if len(given) != 1:
        raise WireError(
            "inputs",
            "give the batch in exactly one of 'inputs' (nested numbers), 'npy' (base64 .npy) or "
            f"'png' (base64 PNGs); got {given or 'none'}",
        )
    field = given[0]
    if field == "inputs":
        try:
            a = np.asarray(body["inputs"], dtype=np.float64)
        except (ValueError, TypeError):
            raise WireError(
                "inputs", "must be a rectangular (N, C, H, W) array of numbers"
            ) from None
    elif field == "npy":
        a = decode_npy(body["npy"])
        if a.dtype.kind != "f":
            raise WireError("npy", f"must hold floats (float32 or float64), not {a.dtype}")
    else:
        a = decode_png(body["png"], size=size)
    if a.ndim != 4:
        raise WireError(field, f"must be a (N, C, H, W) batch; got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), field


def answer_body(response: Response, *, encoding: str = "json") -> dict[str, Any]:
    """The JSON fields that carry ``response``."""
    v = response.values.cpu()
    body: dict[str, Any] = {
        "output": response.kind.value,
        "n": len(response),
        "num_classes": response.num_classes,
        "dim": int(v.shape[1]) if v.dim() > 1 else None,
    }
    if encoding == "npy":
        a = v.numpy().astype(np.int64 if response.kind is OutputKind.LABEL else np.float32)
        body.update(values=None, npy=encode_npy(a))
    else:
        body.update(values=v.tolist(), npy=None)
    return body


def response_from_body(body: dict[str, Any]) -> Response:
    """The Response an answer body carries."""
    kind = OutputKind(body["output"])
    if body.get("npy") is not None:
        a = decode_npy(body["npy"], "npy")
        values = torch.from_numpy(np.array(a))
    else:
        dtype = torch.long if kind is OutputKind.LABEL else torch.float32
        values = torch.tensor(body["values"], dtype=dtype)
    return Response(kind, values, body.get("num_classes"))
