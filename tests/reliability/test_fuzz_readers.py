"""Fuzzing the NIfTI and DICOM readers: mutated headers and bytes may only raise medseg's
documented errors (MedsegError subclasses), never another exception, a crash or a hang.

Mutations start from small valid files: header fields overwritten with hostile values
(NIfTI dims, pixdim, datatype, vox_offset, xform codes and matrices; DICOM Rows, Columns,
BitsAllocated, PixelSpacing, orientation, position, transfer syntax, ...), bit flips and
truncations. Examples are derandomised so ``make test`` is reproducible; set
``MEDSEG_FUZZ_EXAMPLES=5000`` for a longer, randomised session.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.tag import Tag

from medseg.core import MedsegError, Volume
from medseg.io import read_volume
from tests.io import dicom_factory
from tests.reliability import corpus

EXAMPLES = int(os.environ.get("MEDSEG_FUZZ_EXAMPLES", "0"))
TIMEOUT_S = 120 + EXAMPLES // 10  # per test: a hang fails it instead of stalling the suite
# pydicom/nibabel warn about the hostile values they are fed; that is expected here
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]
FUZZ = settings(
    max_examples=EXAMPLES or 500,
    derandomize=not EXAMPLES,
    deadline=timedelta(seconds=5),  # generous: the test machine is shared and noisy
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

# --- NIfTI -----------------------------------------------------------------------------------

# NIfTI-1 header fields: (byte offset, struct format)
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i"), "dim": (40, "<8h"), "datatype": (70, "<h"), "bitpix": (72, "<h"),
    "pixdim": (76, "<8f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"), "qform_code": (252, "<h"), "sform_code": (254, "<h"),
    "quatern": (256, "<6f"), "srow": (280, "<12f"), "magic": (344, "<4s"),
}  # fmt: skip


def _nifti_bytes() -> bytes:
    affine = corpus.AFFINE
    img = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img.to_bytes()


NIFTI = _nifti_bytes()


def _field_values(fmt: str) -> st.SearchStrategy[tuple]:
    count = struct.calcsize(fmt) // struct.calcsize("<" + fmt[-1])
    if fmt.endswith("s"):
        return st.tuples(st.binary(min_size=4, max_size=4))
    element = {
        "h": st.one_of(st.integers(-32768, 32767), st.sampled_from([0, 1, 2, 3, 4, 7, 8])),
        "i": st.one_of(st.integers(-(2**31), 2**31 - 1), st.just(348)),
        "f": st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=False),
    }[fmt[-1]]
    return st.tuples(*[element] * count)


@st.composite
def nifti_overwrite(draw: st.DrawFn) -> tuple[int, bytes]:
    """(offset, bytes) replacing one header field with hostile values."""
    offset, fmt = NIFTI_FIELDS[draw(st.sampled_from(sorted(NIFTI_FIELDS)))]
    return offset, struct.pack(fmt, *draw(_field_values(fmt)))


def bit_flips(size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, size * 8 - 1), max_size=6)


def mutate(data: bytes, overwrites: list[tuple[int, bytes]], flips: list[int],
           cut: int | None) -> bytes:
    """Apply field overwrites, then bit flips, then truncate to ``cut`` bytes."""
    buf = bytearray(data)
    for offset, value in overwrites:
        buf[offset:offset + len(value)] = value
    for bit in flips:
        if bit // 8 < len(buf):
            buf[bit // 8] ^= 1 << (bit % 8)
    return bytes(buf if cut is None else buf[:cut])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="medseg-fuzz-") as folder:
        yield Path(folder)


def read_only_documented_errors(path: Path) -> None:
    """Read ``path``; a Volume or a MedsegError naming the file/folder are the only outcomes."""
    try:
        volume = read_volume(path)
    except MedsegError as exc:
        assert str(path) in str(exc) or "series" in str(exc), str(exc)
        return
    assert isinstance(volume, Volume)
    assert volume.array.ndim == 4 and np.all(np.isfinite(volume.affine))


@pytest.mark.timeout(TIMEOUT_S)
@FUZZ
@given(
    overwrites=st.lists(nifti_overwrite(), max_size=3),
    flips=bit_flips(len(NIFTI)),
    cut=st.one_of(st.none(), st.integers(0, len(NIFTI))),
    compress=st.booleans(),
)
def test_fuzzed_nifti_raises_only_documented_errors(
    scratch: Path, overwrites: list[tuple[int, bytes]], flips: list[int], cut: int | None,
    compress: bool,
) -> None:
    data = mutate(NIFTI, overwrites, flips, cut)
    path = scratch / ("fuzz.nii.gz" if compress else "fuzz.nii")
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    read_only_documented_errors(path)


@pytest.mark.timeout(TIMEOUT_S)
@FUZZ
@given(data=st.binary(max_size=2048), compress=st.booleans())
def test_random_bytes_as_nifti(scratch: Path, data: bytes, compress: bool) -> None:
    path = scratch / ("noise.nii.gz" if compress else "noise.nii")
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    read_only_documented_errors(path)


# --- DICOM -----------------------------------------------------------------------------------

US_TAGS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
           "SamplesPerPixel"]
DS_TAGS = ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
           "RescaleSlope", "RescaleIntercept", "NumberOfFrames"]
TEXT_TAGS = ["PhotometricInterpretation", "SeriesInstanceUID", "SOPClassUID"]
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.201", "1.2.3.4", "",
]


def _dicom_bytes() -> tuple[bytes, dict[str, tuple[int, int, int]], list[bytes]]:
    """The middle slice of a valid 3-slice series, per fuzzed keyword (value offset, value
    length, size of the length field), and the bytes of all three slices."""
    items = corpus.series_datasets(3)
    for ds in items:
        ds.RescaleSlope, ds.RescaleIntercept, ds.NumberOfFrames = "1", "0", "1"
    with tempfile.TemporaryDirectory(prefix="medseg-fuzz-dicom-") as folder:
        series = [p.read_bytes() for p in dicom_factory.save_series(items, Path(folder))]
    data = series[1]
    layout = {}
    for keyword in [*US_TAGS, *DS_TAGS, *TEXT_TAGS, "TransferSyntaxUID"]:
        tag = Tag(keyword)
        head = struct.pack("<HH", tag.group, tag.element) + dictionary_VR(tag).encode()
        start = data.index(head)  # explicit VR little endian: tag, VR, 2-byte length
        length = struct.unpack("<H", data[start + 6:start + 8])[0]
        layout[keyword] = (start + 8, length, 2)
    return data, layout, series


DICOM, DICOM_LAYOUT, SERIES = _dicom_bytes()


def _enhanced_bytes() -> bytes:
    """A 4-frame enhanced MR file (positions in per-frame functional groups)."""
    array = np.arange(5 * 4 * 4, dtype=np.int16).reshape(5, 4, 4)
    with tempfile.TemporaryDirectory(prefix="medseg-fuzz-enhanced-") as folder:
        path = Path(folder) / "enhanced.dcm"
        return dicom_factory.write_enhanced(path, array, corpus.AFFINE).read_bytes()


ENHANCED = _enhanced_bytes()


def _ds_text() -> st.SearchStrategy[bytes]:
    number = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
        st.integers(-(10**12), 10**12).map(str),
        st.text(alphabet="0123456789.-+eE \\nan", max_size=10),
    )
    return st.lists(number, max_size=7).map(lambda parts: "\\".join(parts).encode("ascii"))


@st.composite
def dicom_overwrite(draw: st.DrawFn) -> tuple[str, bytes]:
    """(keyword, new value bytes) for one header element."""
    keyword = draw(st.sampled_from(sorted(DICOM_LAYOUT)))
    if keyword in US_TAGS:
        value = draw(st.one_of(
            st.integers(0, 65535).map(lambda v: v.to_bytes(2, "little")),
            st.sampled_from([0, 1, 8, 12, 16, 32, 64]).map(lambda v: v.to_bytes(2, "little")),
            st.binary(max_size=6),
        ))
    elif keyword in DS_TAGS:
        value = draw(_ds_text())
    elif keyword == "TransferSyntaxUID":
        value = draw(st.sampled_from(TRANSFER_SYNTAXES)).encode("ascii")
    else:
        value = draw(st.binary(max_size=24))
    return keyword, value


def splice(data: bytes, layout: dict[str, tuple[int, int, int]],
           overwrites: list[tuple[str, bytes]]) -> bytes:
    """Replace element values (padded to even length), fixing their 2-byte length fields.

    Later elements move; offsets are applied from the end of the file backwards.
    """
    latest = {keyword: value for keyword, value in overwrites}
    buf = bytearray(data)
    for keyword in sorted(latest, key=lambda k: layout[k][0], reverse=True):
        offset, length, _ = layout[keyword]
        value = latest[keyword] + (b" " if len(latest[keyword]) % 2 else b"")
        buf[offset:offset + length] = value
        buf[offset - 2:offset] = struct.pack("<H", len(value))
    return bytes(buf)


@pytest.mark.timeout(TIMEOUT_S)
@FUZZ
@given(
    overwrites=st.lists(dicom_overwrite(), max_size=3),
    flips=bit_flips(len(DICOM)),
    cut=st.one_of(st.none(), st.integers(0, len(DICOM))),
    in_series=st.booleans(),
)
def test_fuzzed_dicom_raises_only_documented_errors(
    scratch: Path, overwrites: list[tuple[str, bytes]], flips: list[int], cut: int | None,
    in_series: bool,
) -> None:
    data = mutate(splice(DICOM, DICOM_LAYOUT, overwrites), [], flips, cut)
    folder = scratch / "series"
    folder.mkdir(exist_ok=True)
    for i, good in enumerate(SERIES):
        (folder / f"IM{i:04d}.dcm").write_bytes(data if i == 1 else good)
    read_only_documented_errors(folder if in_series else folder / "IM0001.dcm")


@pytest.mark.timeout(TIMEOUT_S)
@FUZZ
@given(flips=bit_flips(len(ENHANCED)), cut=st.one_of(st.none(), st.integers(0, len(ENHANCED))))
def test_fuzzed_enhanced_dicom_raises_only_documented_errors(
    scratch: Path, flips: list[int], cut: int | None
) -> None:
    path = scratch / "enhanced.dcm"
    path.write_bytes(mutate(ENHANCED, [], flips, cut))
    read_only_documented_errors(path)
