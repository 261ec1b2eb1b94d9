"""DuoLift bundle: CT reconstruction from one or two X-rays (DuoLift-GAN / DuoLift-CNN).

The package holds everything the bundle configs reference by ``_target_``:

- :mod:`duolift_bundle.geometry` -- the 128^3 protocol and the DRR geometry (typed; every number once)
- :mod:`duolift_bundle.data` -- case discovery, CT and X-ray readers, the raw-CT chain, preparation,
  dataset routes, X2CT HDF5 layout, inference cases, phantoms, the embedded sample
- :mod:`duolift_bundle.transforms` -- the CT protocol, DRR projection, lung masks, the data
  contract check, projection consistency, evaluation metrics per case, placing and writing outputs
- :mod:`duolift_bundle.networks` -- DuoLift generator, 3D discriminator, X2CT-style and mean-volume
  baselines, loading weights
- :mod:`duolift_bundle.losses` -- the paper's Eq. 1-8
- :mod:`duolift_bundle.engines` -- the GAN / CNN trainer, prepare_batch functions, checkpoint /
  seeding / report handlers, config checks, multi-GPU helpers
- :mod:`duolift_bundle.metrics` -- PSNR, SSIM, LPIPS, MAE, anatomical DICE, the offline-first
  resolver of their pretrained weights (:mod:`duolift_bundle.metrics.weights`)
- :mod:`duolift_bundle.viz` -- figures
- :mod:`duolift_bundle.shipped` -- the shipped files' recorded hashes, and the guard against
  overwriting them
- :mod:`duolift_bundle.errors` -- the base of the bundle's errors, and the hook (installed by the
  configs' ``initialize`` and the scripts, not by importing the package) that repeats an uncaught
  bundle error as the last line of output

Axis convention (the one convention of the whole bundle, see ``docs/README.md``): a CT volume is
``(C, D, H, W)`` with D running superior -> inferior, H anterior -> posterior and W patient right
-> patient left (MONAI axcodes ``"IPL"``). An X-ray is ``(V, H, W)`` with V = 0 the frontal view
(rows superior -> inferior, columns patient right -> left, i.e. displayed as seen from the front)
and V = 1 the lateral view (rows superior -> inferior, columns anterior -> posterior, i.e. seen
from the patient's left side).
"""

from __future__ import annotations

__version__ = "0.10.0"  # the one version: pyproject.toml reads it, configs/metadata.json must match

__all__ = ["__version__"]
