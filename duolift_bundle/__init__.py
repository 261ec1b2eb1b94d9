"""DuoLift bundle: CT reconstruction from one or two X-rays (DuoLift-GAN / DuoLift-CNN).

The package holds everything the bundle configs reference by ``_target_``:

- :mod:`duolift_bundle.data` -- CT readers, X2CT HDF5 layout, phantoms, preparation, datalists
- :mod:`duolift_bundle.transforms` -- the 128^3 CT protocol, DRR projection, lung masks
- :mod:`duolift_bundle.viz` -- figures

Axis convention (the one convention of the whole bundle, see ``docs/README.md``): a CT volume is
``(C, D, H, W)`` with D running superior -> inferior, H anterior -> posterior and W patient right
-> patient left (MONAI axcodes ``"IPL"``). An X-ray is ``(V, H, W)`` with V = 0 the frontal view
(rows superior -> inferior, columns patient right -> left, i.e. displayed as seen from the front)
and V = 1 the lateral view (rows superior -> inferior, columns anterior -> posterior, i.e. seen
from the patient's left side).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
