"""Write a synthetic single-frame MR DICOM series from a Volume (any affine, oblique too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medseg.core import Volume, geometry


def write_dicom_series(volume: Volume, folder: Path, description: str = "T1 synthetic") -> Path:
    """One file per ``k`` slice; pixel (row r, column c) of slice k is ``array[0, c, r, k]``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = geometry.ras_to_lps(volume.affine)
    spacing = geometry.spacing(lps)
    unit = geometry.direction(lps)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    data = volume.array[0].astype(np.int16)
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientSex = "SYN001", "Syn^Pat", "O"
        ds.PatientBirthDate, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", ""
        ds.StudyDate, ds.StudyTime = "20261121", "100000"
        ds.StudyID, ds.Manufacturer = "1", "synthetic"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, k + 1
        ds.SeriesDescription = description
        ds.ImageOrientationPatient = [float(v) for v in (*unit[:, 0], *unit[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in geometry.apply_affine(lps, [0, 0, k])]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()
        ds.save_as(path, enforce_file_format=True)
    return folder
