"""Data layer: ThingsEEG2 files, image metadata, embedded concept lists."""

from .thingseeg2 import (  # noqa: F401
    EEGSplit,
    ImageMetadata,
    concept_name,
    load_image_metadata,
    load_split,
    load_subject,
    save_image_metadata,
    save_split,
    split_file,
    subject_dir,
    validation_split,
)
