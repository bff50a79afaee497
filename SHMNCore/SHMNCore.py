"""SHMN Core: the Slicer-side code that SHMN Segmenter and SHMN Training share (a hidden module).

Finding the ``shmn`` engine, running it in its own process, installing its dependencies on first use,
building parameter nodes, remembering settings and reloading libraries live in SHMNCoreLib, so
neither user-facing module imports the other's library. Both list this module as a dependency, so
Slicer loads it (and puts its folder on ``sys.path``) first. Packaged, CMake installs the engine
(``shmn/``) and its shared resources beside it.
"""

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule


class SHMNCore(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SHMN Core")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.hidden = True  # a library, not a panel
        self.parent.contributors = ["SHMN developers"]
        self.parent.helpText = _("Code shared by SHMN Segmenter and SHMN Training: engine look-up, engine processes, first-use installation.")
        self.parent.acknowledgementText = _("Yang et al., MICCAI 2021.")
