"""DuoLift bundle: CT reconstruction from one or two X-rays (DuoLift-GAN / DuoLift-CNN).

The package holds everything the bundle configs reference by ``_target_``:

- :mod:`duolift_bundle.data` -- CT and X-ray readers, X2CT HDF5 layout, phantoms, preparation, datalists
- :mod:`duolift_bundle.transforms` -- the 128^3 CT protocol, DRR projection, lung masks
- :mod:`duolift_bundle.networks` -- DuoLift generator, 3D discriminator, X2CT-style baseline
- :mod:`duolift_bundle.losses` -- the paper's Eq. 1-8
- :mod:`duolift_bundle.engines` -- the GAN / CNN trainer, checkpoint and seeding handlers, config checks
- :mod:`duolift_bundle.inference` / :mod:`duolift_bundle.evaluation` -- inference on files, the evaluation chain
- :mod:`duolift_bundle.metrics` -- PSNR, SSIM, LPIPS, MAE, anatomical DICE
- :mod:`duolift_bundle.weights` -- the offline-first resolver of pretrained weights
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
