"""Files in and out: volumes (NIfTI, NRRD, MetaImage, DICOM), atomic writes, manifests, the model registry, seg.nrrd, the anatomy cache."""
