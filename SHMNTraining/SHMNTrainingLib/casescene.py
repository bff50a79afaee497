"""One dataset case in the MRML scene: its image, a segmentation with the PVL and ventricle segments,
and the way back from a segment to a mask file on the image's own voxel grid.

Geometry rule (docs/DESIGN.md section 3): Slicer forces a right-handed IJK, so for a NIfTI whose affine has
a negative determinant Slicer's voxel array is the file's array flipped along K. Nothing here
assumes an axis order: masks come in through Slicer's own reader (the labelmap node carries its
IJK-to-RAS), and go out by exporting the segment onto the reference volume's geometry and then
resampling that labelmap, nearest neighbour through physical coordinates, onto the grid that the
image FILE has (read from its header with SimpleITK). Both grids hold the same voxel centres, so
the result is voxel-exact whatever the file's orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .engineaccess import shmn

KINDS = ("pvl", "ventricles")
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
TEMPORARY_NODE_NAME = "__SHMNTraining_temporary__"


def segmentTerms() -> dict:
    """kind -> shmn.terminology.SegmentTerm: the same segment IDs, names, colours and codes as `shmn predict` writes."""
    terminology = shmn("terminology")
    return {"pvl": terminology.PVL_LESION, "ventricles": terminology.LATERAL_VENTRICLES}


def loadImage(path: Path, name: str):
    """The case's image as a scalar volume node, read by Slicer's own reader."""
    node = slicer.util.loadVolume(str(path), {"name": name, "singleFile": True, "show": False})
    if node is None:
        raise RuntimeError(f"{path}: Slicer could not read the image")
    return node


def removeNodes(*nodes) -> None:
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        scene = node.GetScene()
        if node.IsA("vtkMRMLDisplayableNode"):
            for index in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(index)
                if display is not None:
                    scene.RemoveNode(display)
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is not None:
            scene.RemoveNode(node.GetStorageNode())
        scene.RemoveNode(node)


def addSegments(segmentation, kinds=KINDS) -> dict[str, str]:
    """Empty PVL / ventricle segments with SHMN's IDs, names, colours and terminology; kind -> segment ID."""
    terms = segmentTerms()
    ids = {}
    segments = segmentation.GetSegmentation()
    for kind in kinds:
        term = terms[kind]
        if segments.GetSegment(term.segment_id) is None:
            segments.AddEmptySegment(term.segment_id, term.name, list(term.color))
            # The tag form works in every Slicer 5 release (newer ones also offer SetTerminology).
            segments.GetSegment(term.segment_id).SetTag("TerminologyEntry", term.terminology_entry())
        ids[kind] = term.segment_id
    return ids


def createSegmentation(volume, name: str, kinds=KINDS):
    """A segmentation on ``volume``'s geometry with the empty SHMN segments, shown in 2D and 3D."""
    segmentation = volume.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.CreateDefaultDisplayNodes()
    addSegments(segmentation, kinds)
    return segmentation


def setSegmentFromMaskFile(segmentation, segmentId: str, maskPath: Path) -> None:
    """Replace the segment's content with the mask file's non-zero voxels (geometry from the file)."""
    labelmap = slicer.util.loadLabelVolume(str(maskPath), {"name": TEMPORARY_NODE_NAME, "singleFile": True, "show": False})
    if labelmap is None:
        raise RuntimeError(f"{maskPath}: Slicer could not read the mask")
    try:
        voxels = slicer.util.arrayFromVolume(labelmap)
        if voxels.max(initial=0) > 1 or voxels.min(initial=0) < 0:
            voxels[...] = voxels != 0  # label value 1 is what the import maps onto the segment
            slicer.util.arrayFromVolumeModified(labelmap)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
            raise RuntimeError(f"{maskPath}: could not import the mask into segment {segmentId!r}")
    finally:
        removeNodes(labelmap)


def segmentIsEmpty(segmentation, segmentId: str, referenceVolume) -> bool:
    return not slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, referenceVolume).any()


def fileGrid(imagePath: Path) -> sitk.Image:
    """An empty image with the geometry of the image FILE (its header only, voxels are not read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(imagePath))
    reader.ReadImageInformation()
    grid = sitk.Image([int(n) for n in reader.GetSize()[:3]], sitk.sitkUInt8)
    grid.SetOrigin(reader.GetOrigin()[:3])
    grid.SetSpacing(reader.GetSpacing()[:3])
    direction = np.array(reader.GetDirection()).reshape(reader.GetDimension(), reader.GetDimension())[:3, :3]
    grid.SetDirection(direction.flatten().tolist())
    return grid


def imageFromSlicerArray(voxelsKJI: np.ndarray, ijkToRAS: np.ndarray) -> sitk.Image:
    """A SimpleITK image of a Slicer voxel array (K, J, I) with the node's IJK-to-RAS geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxelsKJI.astype(np.uint8)))  # index (i, j, k)
    ijkToLPS = LPS_FROM_RAS @ ijkToRAS
    spacing = np.linalg.norm(ijkToLPS[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijkToLPS[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(ijkToLPS[:3, 3].tolist())
    return image


def exportSegmentToGrid(segmentation, segmentId: str, referenceVolume, grid: sitk.Image) -> sitk.Image:
    """The segment as a uint8 0/1 mask on ``grid`` (the image file's grid), through physical coordinates."""
    labelmap = referenceVolume.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", TEMPORARY_NODE_NAME)
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        exported = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentation, ids, labelmap, referenceVolume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        if not exported:
            raise RuntimeError(f"could not export segment {segmentId!r} onto '{referenceVolume.GetName()}'")
        ijkToRAS = vtk.vtkMatrix4x4()
        labelmap.GetIJKToRASMatrix(ijkToRAS)
        onReference = imageFromSlicerArray(slicer.util.arrayFromVolume(labelmap) > 0, slicer.util.arrayFromVTKMatrix(ijkToRAS))
    finally:
        removeNodes(labelmap)
    return sitk.Resample(onReference, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


@dataclass
class LoadedCase:
    """A case as it is in the scene."""

    caseId: str
    datasetRoot: Path
    imagePath: Path
    volume: object  # vtkMRMLScalarVolumeNode
    segmentation: object  # vtkMRMLSegmentationNode
    segmentIds: dict[str, str]  # kind -> segment ID
    labelled: dict[str, bool]  # kind -> the dataset had a mask of this kind when the case was loaded
    macs: str | None
    extraNodes: list = field(default_factory=list)  # previews etc., removed with the case

    def nodes(self) -> list:
        return [self.volume, self.segmentation, *self.extraNodes]


def loadCase(manifest, caseId: str) -> LoadedCase:
    """The case's image and a segmentation holding its existing masks (empty segments for missing ones)."""
    case = manifest.case(caseId)
    imagePath = manifest.resolve(case.image)
    volume = loadImage(imagePath, caseId)
    segmentation = None
    try:
        segmentation = createSegmentation(volume, f"{caseId} labels")
        segmentIds = addSegments(segmentation)
        labelled = {}
        for kind in KINDS:
            maskPath = manifest.resolve(getattr(case, kind))
            labelled[kind] = maskPath is not None and maskPath.is_file()
            if labelled[kind]:
                setSegmentFromMaskFile(segmentation, segmentIds[kind], maskPath)
    except Exception:
        removeNodes(volume, segmentation)
        raise
    return LoadedCase(caseId, manifest.root, imagePath, volume, segmentation, segmentIds, labelled, case.macs)
