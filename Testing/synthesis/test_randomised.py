"""The on-the-fly domain-randomised synthesis (issue 12): reproducible, labels aligned with the image
through every transform, normal findings never in a target, both anatomies, the slice model, and real
training steps on synthesised samples (alone and through `shmn train`)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from shmn.errors import ShmnError
from shmn.network.losses import shmn_loss
from shmn.network.model import SHMN
from shmn.preprocessing.preprocess import GRIDS
from shmn.synthesis.randomised import labels as L
from shmn.synthesis.randomised.anatomies import source_anatomy
from shmn.synthesis.randomised.artefacts import ArtefactConfig, thick_slices
from shmn.synthesis.randomised.dataset import SynthesisDataset, sample_seed
from shmn.synthesis.randomised.findings import FindingsConfig
from shmn.synthesis.randomised.intensities import IntensityConfig
from shmn.synthesis.randomised.pathology import PathologyConfig
from shmn.synthesis.randomised.sampler import SynthesisConfig, synthesise
from shmn.training.config import load_config
from shmn.training.data import collate

TINY = GRIDS["tiny"]  # 4 mm, 40x48x40
QUIET_SCANNER = ArtefactConfig(thick_slice_probability=0.0, ghost_probability=0.0, bias_probability=0.0, noise_probability=0.0,
                               gibbs_probability=0.0, histogram_shift_probability=0.0, gamma_probability=0.0)


def test_same_seed_same_sample_other_seed_other_sample():
    a, b, c = synthesise(3, TINY), synthesise(3, TINY), synthesise(4, TINY)
    for key in ("image", "labels", "pvl", "ventricles", "density"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.macs == b.macs and a.record == b.record
    assert not np.array_equal(a.image, c.image)
    # the dataset's seed is (run seed, epoch, index): worker-independent, and a new epoch draws new samples
    dataset = SynthesisDataset(TINY, 2, seed=5)
    first = dataset[1]["image"]
    assert torch.equal(first, SynthesisDataset(TINY, 2, seed=5)[1]["image"])
    dataset.epoch = 1
    assert not torch.equal(first, dataset[1]["image"])
    assert torch.equal(dataset[1]["image"], torch.as_tensor(synthesise(sample_seed(5, 1, 1), TINY).image)[None])


@pytest.mark.parametrize("anatomy", ["mni152", "icbm2009"])
def test_both_anatomies_give_plausible_label_maps(anatomy):
    source = source_anatomy(anatomy, TINY.spacing_mm, TINY.size)
    ml = {cls: float((source.labels == cls).sum()) * TINY.spacing_mm**3 / 1000 for cls in (L.WHITE_MATTER, L.CORTEX, L.VENTRICLE)}
    assert 350 < ml[L.WHITE_MATTER] < 800 and 300 < ml[L.CORTEX] < 1000, ml
    assert 8 < ml[L.VENTRICLE] < 45, ml  # adult lateral ventricles, about 10-40 mL
    # the lateral ventricles sit by the midline, left and right
    x = np.broadcast_to(source.ras[0], source.labels.shape)[source.labels == L.VENTRICLE]
    assert (x < 0).sum() > 0.3 * x.size and (x > 0).sum() > 0.3 * x.size


def test_the_two_anatomies_are_different_brains():
    a = source_anatomy("mni152", TINY.spacing_mm, TINY.size).labels
    b = source_anatomy("icbm2009", TINY.spacing_mm, TINY.size).labels
    wm_a, wm_b = a == L.WHITE_MATTER, b == L.WHITE_MATTER
    dice = 2 * (wm_a & wm_b).sum() / (wm_a.sum() + wm_b.sum())
    assert 0.5 < dice < 0.95  # the same space, not the same brain


def test_lesion_labels_are_bright_in_the_flair_ordered_case_through_every_transform():
    config = SynthesisConfig(
        pathology=PathologyConfig(severity_weights=(0, 0, 0, 1)),
        intensity=IntensityConfig(flair_probability=1.0, csf_unsuppressed_probability=0.0),
        artefacts=replace(ArtefactConfig(), brain_scale=(1.0, 1.0)), findings=FindingsConfig(probability=0.0),
    )
    for seed in range(3):
        sample = synthesise(seed, GRIDS["fast"], config)
        solid = sample.labels == L.LESION
        assert sample.pvl[solid].all() and solid.sum() > 20
        wm = sample.labels == L.WHITE_MATTER
        # after deformation, partial volume, thick slices, bias, noise and normalisation: brighter than the
        # white matter around the lesions (a local comparison: the bias field may darken a whole region)
        around = wm & ndimage.binary_dilation(solid, iterations=3) & sample.brain
        assert np.median(sample.image[solid & sample.brain]) > np.median(sample.image[around]), sample.record
        csf = sample.labels == L.VENTRICLE
        assert np.median(sample.image[csf & sample.brain]) < np.median(sample.image[wm & sample.brain])
        # the targets are the deformed label map's, and the density map peaks on the lesions
        assert np.array_equal(sample.pvl, L.pvl_target(sample.labels)) and np.array_equal(sample.ventricles, L.ventricle_target(sample.labels))
        assert sample.density.max() == pytest.approx(1.0, abs=0.05) and sample.density[sample.pvl > 0].mean() > sample.density.mean()


def test_poorly_nulled_csf_brings_the_ventricles_close_to_white_matter_and_keeps_lesions_brightest():
    def ventricle_gaps(unsuppressed: float) -> list[float]:
        """Per seed: how far the ventricles lie below white matter, in units of the lesions' height above it
        (the image is normalised, so only such ratios compare)."""
        config = SynthesisConfig(
            pathology=PathologyConfig(severity_weights=(0, 0, 0, 1)),
            intensity=IntensityConfig(flair_probability=1.0, csf_unsuppressed_probability=unsuppressed),
            artefacts=QUIET_SCANNER, findings=FindingsConfig(probability=0.0),
        )
        gaps = []
        for seed in range(3):
            sample = synthesise(seed, GRIDS["fast"], config)
            wm = np.median(sample.image[(sample.labels == L.WHITE_MATTER) & sample.brain])
            ventricles = np.median(sample.image[(sample.labels == L.VENTRICLE) & sample.brain])
            lesion = np.median(sample.image[(sample.labels == L.LESION) & sample.brain])
            assert lesion > wm > ventricles  # still a FLAIR: lesions brightest, CSF darkest
            gaps.append(float((wm - ventricles) / (lesion - wm)))
        return gaps

    # the same seeds draw the same subject and scanner; only the CSF mean differs (a probability that never
    # fires still draws, so both streams stay aligned)
    nulled, unsuppressed = ventricle_gaps(1e-12), ventricle_gaps(1.0)
    assert all(u < 0.6 * n for u, n in zip(unsuppressed, nulled)), (nulled, unsuppressed)


def test_the_training_config_sets_how_often_and_how_far_the_csf_is_unnulled():
    # stage 5 of the v2 recipe: CSF up to a little above white matter (a badly chosen inversion time)
    from shmn.synthesis.randomised.dataset import synthesis_config

    config = load_config("shmn4:fast", {"synthesis_csf_unsuppressed": [1.0, 1.1, 1.15]})
    synthesis = replace(synthesis_config(config), pathology=PathologyConfig(severity_weights=(1, 0, 0, 0)), artefacts=QUIET_SCANNER,
                        findings=FindingsConfig(probability=0.0), intensity=replace(synthesis_config(config).intensity, flair_probability=1.0))
    assert synthesis.intensity.csf_unsuppressed_fraction == (1.1, 1.15)
    for seed in range(2):
        sample = synthesise(seed, GRIDS["fast"], synthesis)
        wm = np.median(sample.image[(sample.labels == L.WHITE_MATTER) & sample.brain])
        ventricles = np.median(sample.image[(sample.labels == L.VENTRICLE) & sample.brain])
        assert ventricles > wm, (seed, ventricles, wm)
    default = synthesis_config(load_config("shmn4:fast")).intensity
    assert (default.csf_unsuppressed_probability, default.csf_unsuppressed_fraction) == (0.3, (0.45, 0.95))  # stages 3-4


def test_normal_findings_never_appear_in_a_label():
    config = SynthesisConfig(pathology=PathologyConfig(severity_weights=(1, 0, 0, 0)), findings=FindingsConfig(probability=1.0),
                             intensity=IntensityConfig(flair_probability=1.0), artefacts=QUIET_SCANNER)
    seen: set[int] = set()
    for seed in range(3):
        sample = synthesise(seed, GRIDS["fast"], config)
        assert sample.pvl.sum() == 0, "a child without PVL must have an empty lesion target"
        present = {int(c) for c in np.unique(sample.labels)} & set(L.NORMAL_FINDINGS)
        seen |= present
        # findings outside the ventricles are bright on FLAIR, yet not lesion
        caps = sample.labels == L.CAPS_RIM
        if caps.any():
            assert sample.image[caps].mean() > sample.image[sample.labels == L.WHITE_MATTER].mean()
    assert {L.CAPS_RIM, L.TERMINAL_ZONE, L.PERIVASCULAR} <= seen, seen
    with_lesions = synthesise(1, GRIDS["fast"], replace(config, pathology=PathologyConfig(severity_weights=(0, 0, 0, 1))))
    assert with_lesions.pvl.sum() > 0
    assert not np.isin(with_lesions.labels[with_lesions.pvl > 0], L.NORMAL_FINDINGS).any()
    assert set(L.NORMAL_FINDINGS).isdisjoint(L.LESION_CLASSES)


def test_thick_slices_keep_a_slab_and_blur_across_slices():
    image = np.zeros((40, 40, 40), np.float32)
    image[:, :, 20] = 1.0  # a plane one voxel thick, across the slice axis (x)
    rng = np.random.default_rng(0)
    thick = thick_slices(image, 1.0, axis=2, thickness_mm=5.0, gap_mm=1.0, in_plane_mm=1.0, rng=rng)
    profile = thick[20, 20]
    assert profile.sum() == pytest.approx(1.0 * 1.0, rel=0.6)  # signal kept, spread over the slab
    assert profile.max() < 0.5 and (profile > 0.02).sum() >= 4
    same = thick_slices(image, 1.0, axis=0, thickness_mm=5.0, gap_mm=1.0, in_plane_mm=1.0, rng=np.random.default_rng(0))
    assert np.allclose(same[:, 20, 20], same[0, 20, 20])  # along the slice axis a plane stays a plane


def test_a_tiny_training_run_on_synthesised_samples_lowers_the_loss():
    config = load_config("shmn4:tiny", {"device": "cpu"})
    batch = collate([SynthesisDataset(config.grid_spec, 2, seed=1)[i] for i in range(2)])
    torch.manual_seed(0)
    model = SHMN(config.network)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _terms = shmn_loss(model(batch["image"]), batch, config.loss, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_shmn_train_on_the_fly(small_cohort, tmp_path):
    from shmn.network.model_file import read_card
    from shmn.training.train import train

    config = load_config("shmn4:tiny", {"device": "cpu", "epochs": 1, "synthesis": "on-the-fly", "synthesis_samples": 2})
    summary = train(config, [small_cohort / "pvl", small_cohort / "macs"], tmp_path / "run", progress=False, cache_dir=tmp_path / "cache")
    assert summary["epochs_completed"] == 1 and np.isfinite(summary["final"]["train_loss"])
    assert summary["final"]["train"]["pvl"] is not None and summary["final"]["val_loss"] is not None
    card = read_card(summary["best_model"])
    assert card["training_data"]["synthesis"]["mode"] == "on-the-fly" and card["training_data"]["synthetic"] is True
    assert card["training_data"]["synthesis"]["csf_unsuppressed"] == {"share": 0.3, "low": 0.45, "high": 0.95}  # what trained it
    # only the validation cases were preprocessed: synthesised samples need no cache
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["cache"]["registrations"] == len(run["val_ids"])


def test_bad_synthesis_options_name_the_field():
    with pytest.raises(ShmnError, match="synthesis"):
        load_config("shmn4:tiny", {"synthesis": "sometimes"})
    with pytest.raises(ShmnError, match="synthesis_anatomies"):
        load_config("shmn4:tiny", {"synthesis_anatomies": ["colin27"]})
    for bad in ([1.5, 0.45, 0.95], [0.3, 0.95, 0.45], [0.3, 0.45]):
        with pytest.raises(ShmnError, match="synthesis_csf_unsuppressed"):
            load_config("shmn4:tiny", {"synthesis_csf_unsuppressed": bad})


def test_the_second_anatomy_is_fetched_at_set_up_only(tmp_path, monkeypatch):
    import zipfile

    from shmn.io import anatomy

    monkeypatch.setenv(anatomy.CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(ShmnError, match="shmn fetch-anatomy"):
        anatomy.require_icbm2009()
    fake = tmp_path / "nilearn-0.14.1-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("nilearn/__init__.py", "")
    with pytest.raises(ShmnError, match="sha256"):
        anatomy.fetch_icbm2009(wheel=fake, force=True, log=lambda *_: None)
    assert not anatomy.icbm_dir().exists()


def test_macs_balance_alternates_severity_and_keeps_labels_following_burden():
    from shmn.synthesis.randomised.dataset import MILD_LEANING, SEVERE_LEANING

    grid = GRIDS["tiny"]
    balanced = SynthesisDataset(grid, 8, seed=3, config=SynthesisConfig(anatomies=("mni152",)), macs_balanced=True)
    assert balanced.item_config(0).pathology.severity_weights == SEVERE_LEANING
    assert balanced.item_config(1).pathology.severity_weights == MILD_LEANING
    assert SynthesisDataset(grid, 8).item_config(0) == SynthesisConfig()
    records = [synthesise(sample_seed(3, 0, i), grid, balanced.item_config(i)).record for i in range(8)]
    assert all(r["severity"] in ("moderate", "severe") for r in records[0::2])
    assert all(r["severity"] in ("none", "mild", "moderate") for r in records[1::2])
    severe_burden = np.mean([r["motor_ml"] for r in records[0::2]])
    mild_burden = np.mean([r["motor_ml"] for r in records[1::2]])
    assert severe_burden > mild_burden


def test_narrowed_ventricles_are_slit_like_and_the_freed_wall_is_white_matter():
    """Slit-like ventricles (synthesis_ventricle_narrowing): the source anatomy's ventricles are otherwise the smallest
    ever drawn. Narrowing keeps a core inside the original ventricles, gives the rest to the white matter, and the
    target follows the labels."""
    from shmn.synthesis.randomised.dataset import synthesis_config
    from shmn.synthesis.randomised.pathology import add_pathology, narrow_ventricles

    grid = GRIDS["fast"]
    source = source_anatomy("mni152", grid.spacing_mm, grid.size)
    labels = source.labels.copy()
    before = labels == L.VENTRICLE
    distance = narrow_ventricles(labels, source, 0.6, np.random.default_rng(0))
    after = labels == L.VENTRICLE
    assert distance is not None and after.sum() < 0.8 * before.sum() and not np.any(after & ~before)
    assert np.all(labels[before & ~after] == L.WHITE_MATTER)
    assert np.all(distance[after] == 0) and np.all(distance[before & ~after] > 0)
    # A ventricle that is all wall (a sheet two voxels thick) would all but vanish: refused, labels untouched.
    sheet = np.full(source.labels.shape, L.WHITE_MATTER, np.uint8)
    sheet[30:32, 20:70, 20:60] = L.VENTRICLE
    untouched = sheet.copy()
    assert narrow_ventricles(untouched, source, 0.9, np.random.default_rng(0)) is None and np.array_equal(untouched, sheet)
    # Through the config: every lesion-free subject narrowed, smaller than the same draw without it.
    config = synthesis_config(load_config("shmn4:fast", {"synthesis_ventricle_narrowing": [1.0, 0.5, 0.7]}))
    only_normal = replace(config.pathology, severity_weights=(1, 0, 0, 0))
    narrowed_labels, plain_labels = source.labels.copy(), source.labels.copy()
    drawn = add_pathology(narrowed_labels, source, np.random.default_rng(3), only_normal)
    add_pathology(plain_labels, source, np.random.default_rng(3), replace(only_normal, ventricle_narrowing_probability=0.0))
    assert drawn["ventricles_narrowed"] and drawn["ventricle_growth_mm"] == 0.0
    assert (narrowed_labels == L.VENTRICLE).sum() < (plain_labels == L.VENTRICLE).sum()
    sample = synthesise(5, grid, replace(config, pathology=only_normal))
    assert sample.record["ventricles_narrowed"] and np.array_equal(sample.ventricles, L.ventricle_target(sample.labels))
    assert synthesis_config(load_config("shmn4:fast")).pathology.ventricle_narrowing_probability == 0.0  # off by default
    for bad in ([1.5, 0.3, 0.8], [0.3, 0.8, 0.3], [0.3, 0.0, 0.5], [0.3, 0.5, 1.5]):
        with pytest.raises(ShmnError, match="synthesis_ventricle_narrowing"):
            load_config("shmn4:tiny", {"synthesis_ventricle_narrowing": bad})


def test_flair_means_hold_when_unnulled_csf_is_brighter_than_grey_matter():
    """Stage 7's run died in a loader worker: with CSF at up to 1.15 of white matter (v2.7's setting) CSF can read
    brighter than grey matter, and the choroid plexus range (CSF to grey matter) turned round. Every draw now
    holds, and the plexus lies between the two."""
    from shmn.synthesis.randomised.intensities import flair_means

    crossed = 0
    for seed in range(2000):
        means = flair_means(np.random.default_rng(seed), (1.1, 1.15))  # the top of v2.7's range
        csf, gm = means[L.VENTRICLE], means[L.CORTEX]
        crossed += csf > gm
        assert min(csf, gm) + 0.1 <= means[L.CHOROID_PLEXUS] <= max(csf, gm) + 0.1
    assert crossed > 0  # the case that failed is among the draws
