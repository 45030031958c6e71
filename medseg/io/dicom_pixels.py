"""Pixel data of a DICOM series, read into one preallocated ``(K, rows, columns)`` array.

Uncompressed little-endian integer data (the common case) are read straight from the file
offset recorded by the header pass into the output array: no pydicom decoding and no
intermediate copies. pydicom's deferred read + generic decoder cost ~0.4 ms per file and
stacking the planes a full extra copy (benchmarks/dicom_read.py). Unused high bits are
cleared (unsigned) or sign-extended (signed), as pydicom does. Anything else (compressed,
big endian, odd bit depths, short data) goes through ``pydicom``'s decoders, so compressed
syntaxes are decoded by the plugins installed with medseg: pylibjpeg-libjpeg (JPEG
baseline, extended, lossless; JPEG-LS), pylibjpeg-openjpeg (JPEG 2000), pylibjpeg-rle and
pyjpegls; deflated datasets by pydicom itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medseg.core.errors import ReadError
from medseg.io.dicom_geometry import DicomFrame
from medseg.io.dicom_series import parallel_map

_NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class NativeLayout:
    """Where and how a file stores uncompressed pixels."""

    dtype: np.dtype  # little-endian stored type
    stored_bits: int
    offset: int  # file offset of the first frame
    frame_bytes: int


def read_planes(frames: Sequence[DicomFrame], headers: dict[Path, Dataset]) -> np.ndarray:
    """The stored values of ``frames`` (in order) as one ``(K, rows, columns)`` array."""
    by_file: dict[Path, list[tuple[int, int]]] = {}
    for k, frame in enumerate(frames):
        by_file.setdefault(frame.path, []).append((k, frame.frame or 0))
    for path in by_file:
        _check_samples(path, headers[path])
    native = {p: native_layout(headers[p]) for p in by_file}
    decoded_paths = [p for p, layout in native.items() if layout is None]
    arrays = parallel_map(lambda p: decode_file(p, headers[p]), decoded_paths)
    decoded = dict(zip(decoded_paths, arrays, strict=True))
    dtypes = [layout.dtype for layout in native.values() if layout is not None]
    dtype = np.result_type(*dtypes, *(a.dtype for a in decoded.values()))
    out = np.empty((len(frames), frames[0].rows, frames[0].columns), dtype=dtype)
    for path, array in decoded.items():
        for k, index in by_file[path]:
            out[k] = _frame_of(array, index, out.shape[1:], path)
    natives = [p for p in by_file if native[p] is not None]
    parallel_map(lambda p: _read_native(p, native[p], by_file[p], out), natives)
    return out


def native_layout(header: Dataset) -> NativeLayout | None:
    """The file's pixel layout if it can be read directly, else None."""
    if header.file_meta.get("TransferSyntaxUID") not in _NATIVE_SYNTAXES:
        return None
    element = header.get_item("PixelData", keep_deferred=True)
    bits = int(header.get("BitsAllocated", 0) or 0)
    stored = int(header.get("BitsStored", bits) or bits)
    if not isinstance(element, RawDataElement) or bits not in (8, 16, 32):
        return None
    if not 0 < stored <= bits or element.length == _UNDEFINED_LENGTH:
        return None
    signed = int(header.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    frame_bytes = int(header.Rows) * int(header.Columns) * dtype.itemsize
    n_frames = int(header.get("NumberOfFrames", 1) or 1)
    if element.length < n_frames * frame_bytes:
        return None  # too short: pydicom's decoder reports the truncation in its own words
    return NativeLayout(dtype, stored, element.value_tell, frame_bytes)


def decode_file(path: Path, header: Dataset) -> np.ndarray:
    """All frames of a file via pydicom's decoders, as (frames, rows, columns)."""
    try:
        array = pydicom.dcmread(path).pixel_array
    except Exception as exc:  # pydicom decoders raise many unrelated types
        syntax = header.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", None) or str(syntax or "unknown transfer syntax")
        raise ReadError(f"cannot decode pixel data ({name}, {syntax}): {_brief(exc)}"
                        f"{decoder_hint(syntax)}", path) from exc
    return array if array.ndim == 3 else array[None]


#: The package that decodes each family of compressed transfer syntaxes (UID prefixes).
DECODER_PACKAGES = (
    ("1.2.840.10008.1.2.4.9", "pylibjpeg-openjpeg"),  # JPEG 2000 (.90-.93)
    ("1.2.840.10008.1.2.4.8", "pylibjpeg-libjpeg or pyjpegls"),  # JPEG-LS (.80, .81)
    ("1.2.840.10008.1.2.4.", "pylibjpeg-libjpeg"),  # JPEG baseline, extended, lossless
    ("1.2.840.10008.1.2.5", "pylibjpeg-rle"),  # RLE lossless (pydicom has a slow fallback)
)


def decoder_hint(syntax: object) -> str:
    """'; the decoder is in <package> (...)' for a compressed transfer syntax, else ''."""
    text = str(syntax or "")
    for prefix, package in DECODER_PACKAGES:
        if text.startswith(prefix):
            return (f"; its decoder is in the package {package} (installed with medseg: "
                    f"reinstall medseg, or pip install {package.split(' or ')[0]})")
    return ""


def _read_native(
    path: Path, layout: NativeLayout, targets: list[tuple[int, int]], out: np.ndarray
) -> None:
    """Read frames of ``path`` straight into ``out[k]`` for each (k, frame index)."""
    direct = layout.dtype == out.dtype
    with open(path, "rb") as fh:
        for k, index in targets:
            plane = out[k] if direct else np.empty(out.shape[1:], layout.dtype)
            fh.seek(layout.offset + index * layout.frame_bytes)
            if fh.readinto(memoryview(plane).cast("B")) != layout.frame_bytes:
                raise ReadError(f"pixel data of frame {index + 1} is truncated", path)
            _fix_unused_bits(plane, layout.stored_bits)
            if not direct:
                out[k] = plane


def _fix_unused_bits(plane: np.ndarray, stored_bits: int) -> None:
    """Clear (unsigned) or sign-extend (signed) the bits above ``stored_bits``, in place."""
    shift = plane.dtype.itemsize * 8 - stored_bits
    if shift == 0:
        return
    if plane.dtype.kind == "i":
        np.left_shift(plane, shift, out=plane)
        np.right_shift(plane, shift, out=plane)
    else:
        np.bitwise_and(plane, (1 << stored_bits) - 1, out=plane)


def _frame_of(array: np.ndarray, index: int, shape: tuple[int, ...], path: Path) -> np.ndarray:
    if index >= len(array) or array.shape[1:] != shape:
        raise ReadError(
            f"decoded pixel data {array.shape} do not match frame {index + 1} of shape {shape}",
            path,
        )
    return array[index]


def _check_samples(path: Path, header: Dataset) -> None:
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ReadError(f"colour images (SamplesPerPixel={samples}) are not supported", path)


def _brief(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
