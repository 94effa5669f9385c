"""Looking at a run in napari and correcting it: layers (no napari import), the viewer, the reader plugin.

napari is imported only by :mod:`mineral3d.viewer.app` and when napari itself calls the
reader, so ``import mineral3d`` needs no display and no Qt.
"""
