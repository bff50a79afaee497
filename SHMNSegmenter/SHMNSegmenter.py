"""SHMN Segmenter: PVL lesions, lateral ventricles, lesion centres and MACS group from a T2 FLAIR volume.

Thin on purpose: the Slicer-side work lives in SHMNSegmenterLib (one job per file), the science in
the ``shmn`` engine, which runs in its own process.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

from SHMNSegmenterLib import SegmenterParameters, SHMNSegmenterLogic  # noqa: F401 - Slicer looks the logic up here


class SHMNSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SHMN Segmenter")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SHMNCore"]  # the shared Slicer-side library (SHMNCoreLib)
        self.parent.contributors = ["SHMN developers"]
        self.parent.helpText = _(
            "Segments periventricular leukomalacia (PVL) lesions and the lateral ventricles in a child's T2 FLAIR MRI, "
            "marks the lesion centres and predicts the MACS group (mild: I-II, severe: III-V) with the SHMN network "
            "(Yang et al., MICCAI 2021). Research software: the shipped model is trained on synthetic data only and "
            "must not be used for clinical decisions."
        )
        self.parent.acknowledgementText = _(
            "Method: 'Joint PVL Detection and Manual Ability Classification Using Semi-supervised Multi-task "
            "Learning', Yang et al., MICCAI 2021. Anatomy: MNI152 template (FSL) and Desikan-Killiany atlas (FreeSurfer)."
        )


class SHMNSegmenterWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        self.panel = None  # set before the base class, which calls setup() itself when given no parent
        self.logic = None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from SHMNSegmenterLib.widget import SegmenterPanel  # Qt: only in the application

        self.panel = SegmenterPanel(self.resourcePath("UI/SHMNSegmenter.ui"), SHMNSegmenterLogic())
        self.logic = self.panel.logic
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def enter(self):
        self.panel.populateModels()  # models registered since (e.g. in SHMN Training) appear
        self.panel.initializeParameterNode()

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()

    def onReload(self):
        from SHMNCoreLib.reloading import reloadPackages

        reloadPackages("SHMNSegmenterLib")  # Reload re-reads this file only; the libraries hold the code
        ScriptedLoadableModuleWidget.onReload(self)


class SHMNSegmenterTest(ScriptedLoadableModuleTest):
    """Runs the real engine on a phantom case and checks what lands in the scene."""

    model = ""  # a registered model or .safetensors path; "" = the default (shipped) model
    phantomImage = None  # a phantom FLAIR file; None = the engine makes one (`shmn phantom`)

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_SegmentPhantomCase()

    def test_SegmentPhantomCase(self):
        from SHMNSegmenterLib.selftest import makePhantomCase

        logic = SHMNSegmenterLogic()
        image = self.phantomImage or makePhantomCase(logic.engine, slicer.app.temporaryPath)
        volume = slicer.util.loadVolume(str(image))
        result = logic.segment(SegmenterParameters(inputVolume=volume, modelName=self.model), timeout_s=900)
        self.delayDisplay(result.summary.text())

        segments = result.segmentation.GetSegmentation()
        names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
        self.assertEqual(names, ["PVL lesion", "Lateral ventricles"])
        notShown = (result.report["pvl"].get("not_shown") or {}).get("candidates") or []
        self.assertEqual(result.centres.GetNumberOfControlPoints(), len(result.report["pvl"]["lesions"]) + len(notShown))
        lastRow = result.table.GetNumberOfRows() - 1
        self.assertEqual(result.table.GetCellText(lastRow, 1), result.report["model"]["sha256"])
        self.delayDisplay("Test passed")
