"""Masks on the input's grid (shmn.inference.masks): what the ventricle mask encloses joins it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from shmn.inference.masks import with_enclosed


def _image(array: np.ndarray, spacing=(0.9, 0.9, 4.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 2.0))
    return image


def test_a_ring_with_tissue_like_contents_is_filled_in_its_slices():
    # A ventricle drawn as a ring (the network read poorly nulled CSF or choroid plexus in it as tissue).
    array = np.zeros((6, 40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 20, xx - 20)
    array[1:5] = (radius >= 5) & (radius <= 9)
    out = with_enclosed(_image(array))
    filled = sitk.GetArrayFromImage(out)
    assert filled[1:5][radius[None].repeat(4, 0) < 5].all()  # the holes joined the mask
    assert (filled[array > 0] == 1).all() and filled[0].sum() == 0 and filled[5].sum() == 0  # nothing else moved
    assert out.GetSpacing() == (0.9, 0.9, 4.0) and out.GetOrigin() == (-10.0, 5.0, 2.0)


def test_what_an_open_c_shape_wraps_stays_out_and_a_closed_cavity_in_any_plane_is_filled():
    # A C open on one side (the lateral ventricle around the thalamus in a sagittal slice): not enclosed.
    c_shape = np.zeros((30, 40, 40), np.uint8)
    c_shape[5:25, 10:30, 10:13] = 1
    c_shape[5:25, 10:13, 10:30] = 1
    c_shape[5:25, 27:30, 10:30] = 1
    assert sitk.GetArrayFromImage(with_enclosed(_image(c_shape))).sum() == c_shape.sum()
    # A hole closed only in the sections across the first axis (open along the other two): still filled.
    tube = np.zeros((30, 40, 40), np.uint8)
    tube[5:25, 10:30, 10:30] = 1
    tube[5:25, 15:25, 15:25] = 0
    filled = sitk.GetArrayFromImage(with_enclosed(_image(tube)))
    assert filled[5:25, 10:30, 10:30].all() and filled.sum() == 20 * 20 * 20


def test_an_empty_mask_is_returned_as_it_is():
    empty = _image(np.zeros((4, 8, 8), np.uint8))
    assert sitk.GetArrayFromImage(with_enclosed(empty)).sum() == 0


def test_the_network_answers_inside_the_templates_ventricle_hole_reach_the_input_grid(anatomy):
    """The skull-stripped MNI152 template is 0 inside much of the lateral ventricles, so the model-grid brain mask
    has a hole there; a ventricle probability of 1 over the aparc+aseg lateral ventricles, brought to a 1 mm grid,
    must keep the ventricles whole (cut with the holed mask it lost a third of them)."""
    from scipy import ndimage

    from shmn.inference.masks import native_probability
    from shmn.io.anatomy import LATERAL_VENTRICLES
    from shmn.preprocessing.preprocess import GRIDS, PreprocessedCase, _brain_on_grid, model_grid_reference

    reference = model_grid_reference(GRIDS["fast"], anatomy.template)
    brain = _brain_on_grid(anatomy.template, reference)
    ventricles_1mm = sitk.Cast(sitk.GetImageFromArray(anatomy.mask(*LATERAL_VENTRICLES).astype(np.float32)), sitk.sitkFloat32)
    ventricles_1mm.CopyInformation(anatomy.template)
    on_grid = sitk.GetArrayFromImage(sitk.Resample(ventricles_1mm, reference, sitk.Transform(), sitk.sitkLinear, 0.0)) >= 0.5
    hole = ndimage.binary_fill_holes(brain) & ~brain
    assert (hole & on_grid).sum() > 0.2 * on_grid.sum()  # the template's hole: a fact of the shipped anatomy
    case = PreprocessedCase(image=np.zeros(brain.shape, np.float32), brain=brain, reference=reference, transform=sitk.Transform(),
                            quality={}, params={}, timings_s={})
    native = sitk.Image(anatomy.template.GetSize(), sitk.sitkFloat32)
    native.CopyInformation(anatomy.template)
    kept = sitk.GetArrayFromImage(native_probability(on_grid.astype(np.float32), case, native)) >= 0.5
    truth = anatomy.mask(*LATERAL_VENTRICLES)
    assert 2 * (kept & truth).sum() / (kept.sum() + truth.sum()) > 0.85  # the 2 mm round trip of the whole ventricles
    cut = sitk.GetArrayFromImage(sitk.Resample(_from(np.where(brain, on_grid, 0).astype(np.float32), reference), native,
                                               sitk.Transform(), sitk.sitkLinear, 0.0)) >= 0.5
    assert cut.sum() < 0.8 * kept.sum()  # what the holed mask left


def _from(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
