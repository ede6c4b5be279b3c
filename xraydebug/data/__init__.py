"""Datasets: layouts (COVIDx, folder per class, manifest), image IO (PNG, JPEG, TIFF, DICOM),
records and their selection, patient-grouped splits, the synthetic generator and its fonts."""
