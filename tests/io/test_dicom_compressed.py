"""Series in the compressed transfer syntaxes of PACS exports read back as the pixels that
were encoded: exactly for the lossless syntaxes, as an independent decoder (imagecodecs)
decodes them for the lossy ones. Encoders: pydicom (RLE), pyjpegls (JPEG-LS),
pylibjpeg-openjpeg (JPEG 2000), imagecodecs' libjpeg-turbo (JPEG baseline/extended/lossless,
encapsulated by hand); deflate by pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import uid
from pydicom.encaps import encapsulate

from medseg.core.errors import ReadError
from medseg.io import read_volume
from medseg.io.dicom_pixels import decoder_hint
from tests.conftest import make_affine
from tests.io import dicom_factory

imagecodecs = pytest.importorskip("imagecodecs")

SHAPE = (72, 64, 4)  # (I, J, K); JPEG 2000 needs >= 64 pixels a side
AFFINE = make_affine((0.7, 0.8, 2.5), "LPS", (10.0, -5.0, 12.0), origin=(3, -40, 60))


def ct_like(dtype=np.int16, lo=-1024, hi=3071, seed=0) -> np.ndarray:
    """Smooth structure plus noise over the whole stored range (negative values included)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    smooth = (hi - lo) * (0.5 + 0.4 * np.sin(3 * i + 2 * j) * np.cos(2 * k)) + lo
    noisy = smooth + rng.normal(0, 30, SHAPE)
    return np.clip(noisy, lo, hi).astype(dtype)


def write(folder: Path, array: np.ndarray, encode) -> list[Path]:
    datasets = dicom_factory.series_datasets(array, AFFINE)
    for ds in datasets:
        if array.dtype == np.uint8:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelRepresentation = 0
            ds.PixelData = np.ascontiguousarray(ds.pixel_array.astype(np.uint8)).tobytes()
        elif array.dtype == np.uint16 and array.max() < 4096:
            ds.BitsStored, ds.HighBit = 12, 11
        encode(ds)
    return dicom_factory.save_series(datasets, folder)


def pydicom_encoder(syntax, **kwargs):
    return lambda ds: ds.compress(syntax, **kwargs)


def turbo_encoder(syntax, **kwargs):
    """JPEG via libjpeg-turbo (imagecodecs), encapsulated as one fragment per frame."""
    def encode(ds):
        plane = ds.pixel_array
        stored = plane.view(np.uint16) if plane.dtype == np.int16 else plane
        options = {"bitspersample": int(ds.BitsStored), **kwargs}
        ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(stored, **options)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = syntax
        if not kwargs.get("lossless"):
            ds.LossyImageCompression = "01"
    return encode


def independent_decode(path: Path) -> np.ndarray:
    """The first frame of a file decoded by imagecodecs, not by pydicom's plugins."""
    import pydicom

    ds = pydicom.dcmread(path)
    fragment = next(pydicom.encaps.generate_fragmented_frames(ds.PixelData))
    data = b"".join(fragment)
    syntax = ds.file_meta.TransferSyntaxUID
    decoded = (imagecodecs.jpeg2k_decode(data) if syntax in (uid.JPEG2000, uid.JPEG2000Lossless)
               else imagecodecs.jpeg8_decode(data))
    if ds.PixelRepresentation == 1:
        decoded = decoded.astype(np.uint16).view(np.int16)
    return decoded


LOSSLESS = {
    "rle": (pydicom_encoder(uid.RLELossless), np.int16),
    "jpeg-ls lossless": (pydicom_encoder(uid.JPEGLSLossless), np.int16),
    "jpeg 2000 lossless": (pydicom_encoder(uid.JPEG2000Lossless), np.int16),
    "jpeg lossless sv1": (turbo_encoder(uid.JPEGLosslessSV1, lossless=True, predictor=1),
                          np.int16),
    "jpeg lossless sv1, unsigned 12-bit": (
        turbo_encoder(uid.JPEGLosslessSV1, lossless=True, predictor=1), np.uint16),
    "deflated": (lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                                    uid.DeflatedExplicitVRLittleEndian), np.int16),
}


@pytest.mark.parametrize("name", list(LOSSLESS))
def test_lossless_syntaxes_read_back_equal(tmp_path: Path, name: str):
    encode, dtype = LOSSLESS[name]
    array = ct_like(dtype, 0, 4095) if dtype == np.uint16 else ct_like(dtype)
    paths = write(tmp_path, array, encode)
    volume = read_volume(tmp_path)
    np.testing.assert_array_equal(volume.array[0], array)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.meta["dicom_files"] == [str(p) for p in paths]


LOSSY = {
    "jpeg-ls near-lossless": (pydicom_encoder(uid.JPEGLSNearLossless, jls_error=3),
                              np.int16, 3),
    "jpeg 2000 lossy": (pydicom_encoder(uid.JPEG2000, j2k_cr=[8]), np.int16, None),
    "jpeg baseline 8-bit": (turbo_encoder(uid.JPEGBaseline8Bit, level=85), np.uint8, None),
    "jpeg extended 12-bit": (turbo_encoder(uid.JPEGExtended12Bit, level=90),
                             np.uint16, None),
}


@pytest.mark.parametrize("name", list(LOSSY))
def test_lossy_syntaxes_read_as_an_independent_decoder_does(tmp_path: Path, name: str):
    encode, dtype, near = LOSSY[name]
    if dtype == np.uint8:
        array = ct_like(np.uint8, 0, 255)
    elif dtype == np.uint16:
        array = ct_like(np.uint16, 0, 4095)
    else:
        array = ct_like(dtype)
    paths = write(tmp_path, array, encode)
    got = read_volume(tmp_path).array[0]
    if near is not None:  # JPEG-LS near-lossless bounds every error by NEAR
        assert np.abs(got.astype(int) - array).max() <= near
        return
    for k, path in enumerate(paths):
        reference = independent_decode(path).T  # (rows, columns) -> (i, j)
        # two JPEG libraries (libjpeg vs libjpeg-turbo IDCTs) may differ by a level or two
        assert np.abs(got[:, :, k].astype(int) - reference.astype(int)).max() <= 2
    span = float(array.max()) - float(array.min())
    assert np.abs(got.astype(float) - array).mean() < 0.02 * span


def test_missing_decoder_names_file_syntax_and_package(tmp_path: Path, monkeypatch):
    write(tmp_path, ct_like(), pydicom_encoder(uid.JPEG2000Lossless))
    from pydicom.pixels.decoders import base

    def unavailable(self, *args, **kwargs):
        raise RuntimeError("Unable to decode as there are no pixel data plugins available")

    monkeypatch.setattr(base.Decoder, "as_array", unavailable)
    with pytest.raises(ReadError) as info:
        read_volume(tmp_path)
    message = str(info.value)
    assert "JPEG 2000" in message and str(tmp_path) in message
    assert "pylibjpeg-openjpeg" in message


@pytest.mark.parametrize("syntax,package", [
    (uid.JPEG2000Lossless, "pylibjpeg-openjpeg"), (uid.JPEGLSLossless, "pylibjpeg-libjpeg"),
    (uid.JPEGBaseline8Bit, "pylibjpeg-libjpeg"), (uid.RLELossless, "pylibjpeg-rle"),
])
def test_decoder_hint_names_the_package(syntax, package):
    assert package in decoder_hint(syntax)
