"""Data for FedMedCLIP sites: safe image decoding, dataset readers, the federation's class
index, patient-level splits, simulated partitions and synthetic federations."""

from .datasets import (
    ClassIndex,
    DatasetError,
    DatasetReport,
    ImageRecord,
    read_dataset,
    read_image_folder,
    read_manifest,
    validate_dataset,
)
from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageDecodeError,
    decode_image,
    load_image_file,
)
from .partition import dirichlet_partition, partition_by_column
from .splits import Splits, split_indices, split_records
from .synth import SynthSummary, synth_class_names, synthesize_federation

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ClassIndex",
    "DatasetError",
    "DatasetReport",
    "ImageDecodeError",
    "ImageRecord",
    "Splits",
    "SynthSummary",
    "decode_image",
    "dirichlet_partition",
    "load_image_file",
    "partition_by_column",
    "read_dataset",
    "read_image_folder",
    "read_manifest",
    "split_indices",
    "split_records",
    "synth_class_names",
    "synthesize_federation",
    "validate_dataset",
]
