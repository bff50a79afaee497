"""SHMN Training: label cases (PVL, ventricles, MACS), preview pseudo-labels, retrain and register SHMN models.

Thin on purpose: the Slicer-side work lives in SHMNTrainingLib (one job per file), the science in
the ``shmn`` engine, which trains, evaluates and predicts in its own process.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

from SHMNTrainingLib import SHMNTrainingLogic  # noqa: F401 - Slicer looks the logic up here


class SHMNTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SHMN Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SHMNCore", "Segmentations", "SegmentEditor"]
        self.parent.contributors = ["SHMN developers"]
        self.parent.helpText = _(
            "For annotators: open a dataset folder (SHMN manifest, or a plain folder of images), label PVL lesions, "
            "lateral ventricles and the MACS group of each case in the Segment Editor (optionally pre-filled by the "
            "current model), save the labels into the dataset (previous versions are kept), preview pseudo-labels, "
            "train or fine-tune SHMN with live curves, evaluate it on the held-out split and register it for the "
            "SHMN Segmenter module. Research software, not for clinical use."
        )
        self.parent.acknowledgementText = _(
            "Method: 'Joint PVL Detection and Manual Ability Classification Using Semi-supervised "
            "Multi-task Learning', Yang et al., MICCAI 2021."
        )


class SHMNTrainingWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        self.panel = None  # set before the base class, which calls setup() itself when given no parent
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from SHMNTrainingLib.widget import TrainingPanel  # Qt: only in the application

        self.panel = TrainingPanel(self.resourcePath("UI/SHMNTraining.ui"), SHMNTrainingLogic())
        self.layout.addWidget(self.panel.widget)

    def enter(self):
        self.panel.enter()

    def exit(self):
        self.panel.exit()

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()

    def onReload(self):
        from SHMNCoreLib.reloading import reloadPackages

        reloadPackages("SHMNTrainingLib")  # Reload re-reads this file only; the libraries hold the code
        ScriptedLoadableModuleWidget.onReload(self)


class SHMNTrainingTest(ScriptedLoadableModuleTest):
    """Annotation round trip on a negative-determinant case, then one real training epoch on the tiny grid."""

    datasets = None  # dataset folders to train on; None = the engine makes a phantom cohort (`shmn phantom`)

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_AnnotateAndSave()
        self.setUp()
        self.test_TrainOneEpoch()

    def test_AnnotateAndSave(self):
        import tempfile

        from SHMNTrainingLib.selftest import annotationRoundTrip

        folder = tempfile.mkdtemp(prefix="SHMNTraining-", dir=slicer.app.temporaryPath)
        self.assertEqual(annotationRoundTrip(folder, log=self.delayDisplay).problems(), [])
        self.delayDisplay("Test passed")

    def test_TrainOneEpoch(self):
        import tempfile

        from SHMNTrainingLib.selftest import trainOneEpoch

        folder = tempfile.mkdtemp(prefix="SHMNTraining-", dir=slicer.app.temporaryPath)
        self.assertEqual(trainOneEpoch(folder, self.datasets, log=self.delayDisplay).problems(), [])
        self.delayDisplay("Test passed")
