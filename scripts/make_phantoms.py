"""Generate seeded synthetic chest CT phantoms and prepare them like real data.

    python scripts/make_phantoms.py --out data/phantoms --n 12 --size 128 --seed 0 --workers 2

Writes ``<out>/raw/phantom_XXXX.nii.gz`` (HU) with ``_lung_label`` / ``_vessel_label`` ground
truth, the prepared cases ``<out>/phantom_XXXX/`` and ``<out>/datalist.json``.
"""

from __future__ import annotations

import sys

import fire
from duolift_bundle.datasets.prepare import format_summary
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import CTProtocol, Protocol
from duolift_bundle.synthetic.phantoms import make_phantom_set


def main(
    out: str,
    n: int = 12,
    size: int = CTProtocol.size,
    seed: int = 0,
    workers: int = 1,
    lazy: bool = True,
    progress: bool = True,
    volume_size: int | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> None:
    """Write N phantoms of SIZE^3 voxels (the protocol's 320 mm field of view) starting at SEED into OUT.

    VOLUME_SIZE is the prepared volume and DRR size (the protocol's ``size``; default SIZE), e.g.
    ``--size 64`` gives 64^3 volumes with 64 x 64 DRRs for quick CPU training.

    FRACTIONS are the training / validation / test shares of the seeded split in ``datalist.json``;
    ``--fractions "[0,0,1]"`` puts every case in ``test`` (a held-out evaluation set).

    The phantoms are generated on the protocol's own 320 mm grid, so the 1 mm resampling of the
    protocol is near the identity; LAZY (default on) fuses its spatial steps into one interpolation
    (MONAI lazy resampling), which makes a dozen phantoms take seconds. --nolazy runs them eagerly.
    """
    protocol = Protocol.build(volume_size or size, lazy=lazy)
    summary = make_phantom_set(
        out,
        n=n,
        size=size,
        seed=seed,
        workers=workers,
        protocol=protocol,
        progress=progress,
        fractions=tuple(fractions),
    )
    print(format_summary(summary))
    sys.exit(1 if summary["failed"] else 0)


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
