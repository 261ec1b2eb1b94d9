"""DuoLift bundle: CT reconstruction from one or two X-rays (DuoLift-GAN / DuoLift-CNN).

The package holds everything the bundle configs reference by ``_target_``, laid out in floors; a
module imports only from its own floor or the floors below
(``tests/test_layout.py`` checks it):

0. the root modules: :mod:`~duolift_bundle.constants` (the data contract's keys and axes),
   :mod:`~duolift_bundle.errors`, :mod:`~duolift_bundle.io_utils` (atomic outputs),
   :mod:`~duolift_bundle.geometry` (the typed 128^3 protocol and DRR geometry; every number once),
   :mod:`~duolift_bundle.registry` (the model registry, ``models/registry.json``),
   :mod:`~duolift_bundle.shipped` (the guard of the shipped files), :mod:`~duolift_bundle.losses`
   (the paper's Eq. 1-8), :mod:`~duolift_bundle.viz` (figures);
1. :mod:`duolift_bundle.imaging` -- image-analysis algorithms on arrays: body and lung masks, the
   table removal, the lung fields of a radiograph;
2. :mod:`duolift_bundle.inputs` -- reading inputs: CT files and series, radiograph files (reading,
   physical placement, contrast), case discovery, X2CT's HDF5 files;
3. :mod:`duolift_bundle.metrics` -- PSNR, SSIM, LPIPS, MAE, anatomical DICE and the offline-first
   resolver of their pretrained weights;
4. :mod:`duolift_bundle.transforms` -- MONAI transforms: the CT protocol, DRR projection, the data
   contract check, projection consistency and refinement, per-case metrics, writing outputs;
5. :mod:`duolift_bundle.datasets` -- the raw-CT chain, preparation, dataset routes, splits,
   training sets, DRR augmentation, inference cases, the embedded sample;
6. :mod:`duolift_bundle.synthetic` -- phantoms and their realism report;
7. :mod:`duolift_bundle.networks` -- DuoLift generator, 3D discriminator, X2CT-style and
   mean-volume baselines, loading weights;
8. :mod:`duolift_bundle.engines` -- the GAN / CNN trainer, prepare_batch functions, handlers,
   reports, config checks, multi-GPU helpers, the recipe comparison;
9. :mod:`duolift_bundle.serving` -- one model answering requests (the MONAI Label app's core).

The bundle's last-line error hook (:mod:`duolift_bundle.errors`) is installed by the configs'
``initialize`` and the scripts, not by importing the package.

Axis convention (the one convention of the whole bundle, see ``docs/README.md``): a CT volume is
``(C, D, H, W)`` with D running superior -> inferior, H anterior -> posterior and W patient right
-> patient left (MONAI axcodes ``"IPL"``). An X-ray is ``(V, H, W)`` with V = 0 the frontal view
(rows superior -> inferior, columns patient right -> left, i.e. displayed as seen from the front)
and V = 1 the lateral view (rows superior -> inferior, columns anterior -> posterior, i.e. seen
from the patient's left side).
"""

from __future__ import annotations

__version__ = "0.12.0"  # the one version: pyproject.toml reads it, configs/metadata.json must match

__all__ = ["__version__"]
