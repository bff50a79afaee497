"""What SHMN Segmenter and SHMN Training share on the Slicer side, one job per file.

engine (find and command the ``shmn`` engine), process (run it in its own process, read its output),
jobs (a sequence of engine commands, polled, then its results imported), dependencies (install what
the engine needs, after asking), parameternode (a parameterNodeWrapper class from a plain dataclass),
tables (result table nodes), reloading (the modules' onReload), settings (QSettings: choices kept
across sessions; Qt, imported by the panels only). Nothing here imports Qt at import time, nor torch.
"""
