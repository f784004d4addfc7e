"""A real PACS for tests: Orthanc with its DICOMweb plugin (Debian packages ``orthanc`` and
``orthanc-dicomweb``, installed by scripts/test.sh), and DICOM studies made from images.

Orthanc runs as a subprocess with a JSON configuration written here: HTTP on a loopback
port only, no DICOM port, remote access refused, HTTP basic authentication with one user
(to exercise the inference API's PACS credentials), storage in a temporary folder.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tests.support.processes import free_port, wait_until

PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so"),
)
USER, PASSWORD = "fmc-inference", "pacs-password-for-tests"


@dataclass(frozen=True)
class Orthanc:
    url: str
    user: str = USER
    password: str = PASSWORD

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(self.user, self.password), timeout=30)

    def upload(self, instances: list[bytes]) -> None:
        with self.client() as http:
            for data in instances:
                http.post("/instances", content=data).raise_for_status()


def _plugin() -> Path | None:
    found = next((p for p in PLUGIN_CANDIDATES if p.exists()), None)
    if found is None and shutil.which("dpkg"):
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False
        ).stdout
        found = next((Path(line) for line in listing.split() if line.endswith(".so")), None)
    return found


@contextmanager
def orthanc_server() -> Iterator[Orthanc]:
    """Start Orthanc on a loopback port; skip when the Debian packages are missing."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    plugin = _plugin()
    if not Path(binary).exists() or plugin is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (see scripts/test.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="fmc-orthanc-"))
    port = free_port()
    config = {
        "Name": "fedmedclip-tests",
        "StorageDirectory": str(workdir / "db"),
        "IndexDirectory": str(workdir / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "DicomServerEnabled": False,
        "HttpsVerifyPeers": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [binary, str(workdir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
    )
    server = Orthanc(f"http://127.0.0.1:{port}")

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(workdir / 'orthanc.log').read_text()[-2000:]}")
        try:
            with server.client() as http:
                return http.get("/dicom-web/studies").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=60, what="Orthanc answering DICOMweb")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Study:
    study_uid: str
    series_uid: str
    instance_uids: list[str]
    instances: list[bytes]


def _base(study_uid: str, series_uid: str, patient: str, sop_class: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.PatientName = f"Test^{patient}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.Manufacturer = "synthetic"
    return ds


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def secondary_capture(png: bytes, study_uid: str, series_uid: str, number: int) -> bytes:
    """An RGB Secondary Capture instance holding the pixels of ``png``."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.uint8)
    ds = _base(study_uid, series_uid, "SYN001", SecondaryCaptureImageStorage)
    ds.InstanceNumber = number
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return _bytes(ds)


def make_study(pngs: list[bytes]) -> Study:
    study_uid, series_uid = generate_uid(), generate_uid()
    instances = [secondary_capture(png, study_uid, series_uid, n) for n, png in enumerate(pngs, 1)]
    uids = [str(_read_uid(data)) for data in instances]
    return Study(study_uid, series_uid, uids, instances)


def non_image_study() -> Study:
    """A study whose only instance has no pixel data (a Basic Text SR shell)."""
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _base(study_uid, series_uid, "SYN002", "1.2.840.10008.5.1.4.1.1.88.11")
    ds.Modality = "SR"
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    data = _bytes(ds)
    return Study(study_uid, series_uid, [str(ds.SOPInstanceUID)], [data])


def _read_uid(data: bytes) -> str:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
