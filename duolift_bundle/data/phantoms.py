"""Seeded synthetic chest CT phantoms in HU with ground-truth lung and vessel labels.

Each phantom is built analytically on a ``size``^3 grid covering ``fov`` mm (default 320 mm, the
protocol's field of view) in the bundle's axis convention (``(D, H, W)`` = superior->inferior,
anterior->posterior, right->left). Anatomy, every dimension drawn from the seed:

- body: elliptic cylinder whose width varies along z, a subcutaneous fat layer (-100 HU) around
  soft tissue / muscle (40 HU), air outside (-1000 HU);
- lungs: two half-ellipsoids with a domed diaphragm (-850 HU), the left one indented by the heart;
- heart / mediastinum (40 HU) and a descending aorta (45 HU);
- trachea and main bronchi (air, -1000 HU) from the neck to each hilum;
- pulmonary vessel trees (40 HU): seeded binary trees growing from each hilum, kept inside the lung;
- spine: vertebral bodies (cortical shell 700 HU, cancellous 250 HU) separated by discs, with
  spinous processes; ribs (600 HU) sloping down towards the front; a sternum (400 HU);
- partial-volume blur and Gaussian noise.

Labels: ``lung`` (1 = right, 2 = left, vessels inside the lungs included; airways excluded) and
``vessels`` (1 inside the lung vessel trees). A phantom of 128^3 takes well under a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from duolift_bundle.data.discovery import CaseSource
from duolift_bundle.data.prepare import prepare
from duolift_bundle.geometry import CTProtocol, Protocol, grid_affine
from duolift_bundle.io_utils import atomic_path

#: the protocol's field of view: phantoms are drawn on its own grid
FOV_MM = CTProtocol().fov_mm

__all__ = ["Phantom", "make_phantom", "asymmetric_ball_phantom", "write_raw_phantom", "make_phantom_set"]


@dataclass
class Phantom:
    """A synthetic CT: ``hu`` float32 ``(D, H, W)``, labels uint8, ``affine`` (RAS, mm)."""

    hu: np.ndarray
    lung: np.ndarray
    vessels: np.ndarray
    affine: np.ndarray
    params: dict


def _grid(size: int, fov: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * (fov / size)
    return c[:, None, None], c[None, :, None], c[None, None, :]  # z (inferior+), y (posterior+), x (left+)


def _segment_mask(z, y, x, p0, p1, radius) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Voxels within ``radius`` of segment p0-p1 (mm), restricted to the bounding box."""
    lo = np.minimum(p0, p1) - radius
    hi = np.maximum(p0, p1) + radius
    axes = (z.ravel(), y.ravel(), x.ravel())
    sl = []
    for a, l, h in zip(axes, lo, hi):
        idx = np.flatnonzero((a >= l) & (a <= h))
        if idx.size == 0:
            return None
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    zz, yy, xx = z[sl[0]], y[:, sl[1]], x[:, :, sl[2]]
    d = p1 - p0
    length2 = float(d @ d) or 1e-6
    t = ((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist2 = (zz - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (xx - p0[2] - t * d[2]) ** 2
    return tuple(sl), dist2 <= radius * radius


def _paint_segment(target: np.ndarray, z, y, x, p0, p1, radius, value=True) -> None:
    hit = _segment_mask(z, y, x, np.asarray(p0, float), np.asarray(p1, float), radius)
    if hit is not None:
        sl, m = hit
        target[sl][m] = value


def _vessel_tree(rng, root, direction, length, radius, depth, segments) -> None:
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d)
    end = np.asarray(root, float) + d * length
    segments.append((np.asarray(root, float), end, radius))
    if depth == 0 or radius < 0.9:
        return
    # two children rotated by random angles about a random axis perpendicular to d
    perp = np.cross(d, rng.normal(size=3))
    perp /= np.linalg.norm(perp) + 1e-9
    for sign in (1.0, -1.0):
        angle = np.deg2rad(rng.uniform(20, 40)) * sign
        child = d * np.cos(angle) + perp * np.sin(angle)
        _vessel_tree(rng, end, child, length * rng.uniform(0.68, 0.82), radius * rng.uniform(0.68, 0.78), depth - 1, segments)


def make_phantom(seed: int, size: int = 128, fov: float = FOV_MM, noise_hu: float = 12.0) -> Phantom:
    """Generate one seeded chest phantom (see the module docstring).

    Args:
        seed: random seed; the same seed always gives the same phantom.
        size: voxels per side.
        fov: field of view in mm (voxel size ``fov / size``).
        noise_hu: standard deviation of the additive Gaussian noise.
    """
    if size < 16:
        raise ValueError(f"phantom size must be >= 16, got {size}")
    rng = np.random.default_rng(seed)
    z, y, x = _grid(size, fov)
    shape = (size, size, size)
    vox = fov / size
    p = {
        "body_ax": rng.uniform(140, 168),
        "body_ay": rng.uniform(95, 118),
        "fat": rng.uniform(8, 20),
        "lung_ax": rng.uniform(48, 60),
        "lung_ay": rng.uniform(68, 84),
        "lung_top": rng.uniform(-150, -125),
        "lung_base": rng.uniform(55, 85),
        "heart_r": rng.uniform(45, 58),
        "tilt": rng.uniform(-0.04, 0.04),
    }
    # --- body: elliptic cylinder, a little wider at the shoulders
    widen = 1.0 + 0.06 * np.clip(-z / 160.0, -1, 1)
    ax = p["body_ax"] * widen
    ay = p["body_ay"] * np.ones_like(widen)
    r_body = (x / ax) ** 2 + ((y - 5.0) / ay) ** 2
    body = r_body <= 1.0
    inner = ((x / (ax - p["fat"])) ** 2 + ((y - 5.0) / (ay - p["fat"])) ** 2) <= 1.0
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(body, shape)] = -100.0
    hu[np.broadcast_to(inner, shape)] = 40.0
    # --- lungs: half-ellipsoids, domed base
    lung = np.zeros(shape, dtype=np.uint8)
    zc = 0.5 * (p["lung_top"] + p["lung_base"])
    hz = 0.5 * (p["lung_base"] - p["lung_top"])
    heart_c = np.array([rng.uniform(35, 60), rng.uniform(-45, -25), rng.uniform(15, 30)])  # z, y, x
    for label, side in ((1, -1.0), (2, 1.0)):
        cx = side * (p["body_ax"] * 0.42) + p["tilt"] * z
        lx = p["lung_ax"] * (0.9 if side > 0 else 1.0)
        dome = 18.0 * (((x - cx) / lx) ** 2 + (y / p["lung_ay"]) ** 2)
        e = ((x - cx) / lx) ** 2 + ((y - 8.0) / p["lung_ay"]) ** 2 + ((z - zc) / hz) ** 2
        apex_round = ((z - p["lung_top"]) > 0) | (e <= 1.0)
        m = (e <= 1.0) & apex_round & (z <= p["lung_base"] - 18.0 + dome) & (z >= p["lung_top"])
        lung[m] = label
    # the chest wall (fat, muscle, ribs) is at least ~15 mm thick everywhere
    cage = ((x / (ax - p["fat"] - 15.0)) ** 2 + ((y - 5.0) / (ay - p["fat"] - 15.0)) ** 2) <= 1.0
    lung[~np.broadcast_to(cage, shape)] = 0
    heart = ((z - heart_c[0]) / (p["heart_r"] * 1.1)) ** 2 + ((y - heart_c[1]) / (p["heart_r"] * 0.9)) ** 2 + (
        (x - heart_c[2]) / p["heart_r"]
    ) ** 2 <= 1.0
    lung[heart] = 0
    mediastinum = (np.abs(x - heart_c[2] * 0.3) < 22.0) & (y < 40.0) & (z < heart_c[0])
    lung[np.broadcast_to(mediastinum, shape)] = 0
    hu[lung > 0] = -850.0
    hu[heart] = 40.0
    # --- aorta (descending, left of the spine)
    aorta = np.zeros(shape, dtype=bool)
    _paint_segment(aorta, z, y, x, (-70.0, 40.0, 22.0), (150.0, 45.0, 18.0), 11.0)
    _paint_segment(aorta, z, y, x, (-70.0, 40.0, 22.0), (-60.0, -20.0, 5.0), 12.0)
    hu[aorta] = 45.0
    lung[aorta] = 0
    # --- vessel trees from each hilum
    vessels = np.zeros(shape, dtype=bool)
    depth = int(rng.integers(5, 7))
    for side in (-1.0, 1.0):
        hilum = np.array([rng.uniform(-20, 5), rng.uniform(-5, 10), side * rng.uniform(35, 45)])
        segs: list = []
        for direction in ((-0.6, 0.1, side * 0.6), (0.8, 0.1, side * 0.4), (0.1, -0.7, side * 0.6), (0.2, 0.8, side * 0.5)):
            _vessel_tree(rng, hilum, np.array(direction) + rng.normal(scale=0.15, size=3), rng.uniform(30, 40), rng.uniform(4.0, 5.5), depth, segs)
        for p0, p1, r in segs:
            _paint_segment(vessels, z, y, x, p0, p1, max(r, 0.6 * vox))
    vessels &= lung > 0
    hu[vessels] = 40.0
    # --- trachea and main bronchi (air inside soft tissue; not lung)
    airway = np.zeros(shape, dtype=bool)
    carina = np.array([rng.uniform(-45, -30), -5.0, 0.0])
    _paint_segment(airway, z, y, x, (-170.0, -12.0, 0.0), carina, 9.0)
    for side in (-1.0, 1.0):
        _paint_segment(airway, z, y, x, carina, (carina[0] + 25.0, 0.0, side * 38.0), 6.0)
    hu[airway] = -1000.0
    lung[airway] = 0
    vessels &= lung > 0
    # --- spine: vertebral bodies, discs, spinous processes
    spine_y = p["body_ay"] - 55.0
    r_spine = np.sqrt((x - 0.0) ** 2 + (y - spine_y) ** 2)
    period = rng.uniform(24, 28)
    phase = np.mod(z + rng.uniform(0, period), period)
    disc = phase < 5.0
    vert = np.broadcast_to(r_spine <= 17.0, shape)
    cortex = np.broadcast_to((r_spine > 14.0) & (r_spine <= 17.0), shape)
    hu[vert] = 250.0
    hu[cortex & ~np.broadcast_to(disc, shape)] = 700.0
    hu[vert & np.broadcast_to(disc, shape)] = 80.0
    canal = np.broadcast_to(np.sqrt(x**2 + (y - spine_y - 26.0) ** 2) <= 7.0, shape)
    process = np.broadcast_to((np.abs(x) <= 4.0) & (y >= spine_y + 33.0) & (y <= spine_y + 50.0), shape) & ~np.broadcast_to(disc, shape)
    hu[process] = 600.0
    hu[canal] = 20.0
    # --- ribs: elliptic arcs sloping down anteriorly
    theta = np.arctan2((y - 5.0) / ay, x / ax)  # 0 = patient left, +pi/2 = posterior
    ring = np.sqrt((x / ax) ** 2 + ((y - 5.0) / ay) ** 2)
    rib_r = 1.0 - (p["fat"] + 8.0) / p["body_ay"]
    posteriority = np.sin(theta)  # +1 posterior, -1 anterior
    ribs = np.zeros(shape, dtype=bool)
    n_ribs = int(rng.integers(9, 12))
    first = p["lung_top"] + 10.0
    spacing = (p["lung_base"] - first) / n_ribs
    for i in range(n_ribs):
        z_rib = first + i * spacing + 22.0 * (1.0 - posteriority) * 0.5
        dz = (z - z_rib) / 4.5
        dr = (ring - rib_r) * p["body_ay"] / 4.5
        arc = np.abs(np.angle(np.exp(1j * (theta + np.pi / 2)))) > np.deg2rad(25)  # not across the sternum
        ribs |= ((dz**2 + dr**2) <= 1.0) & arc
    hu[ribs & (lung == 0) & ~heart] = 600.0
    sternum = np.broadcast_to((np.abs(x) <= 14.0) & (np.abs(y - (5.0 - ay + p["fat"] + 9.0)) <= 5.0), shape) & (z > p["lung_top"] + 15) & (z < p["lung_base"] - 10)
    hu[sternum] = 400.0
    # --- partial volume and noise
    hu = ndi.gaussian_filter(hu, sigma=0.5 * 2.5 / vox)
    hu += rng.normal(scale=noise_hu, size=shape).astype(np.float32)
    hu = np.clip(hu, -1024.0, 3000.0).astype(np.float32)
    p.update({"seed": int(seed), "size": int(size), "fov_mm": float(fov), "n_ribs": n_ribs, "vessel_depth": depth})
    return Phantom(hu=hu, lung=lung, vessels=vessels.astype(np.uint8), affine=grid_affine(size, fov), params=p)


def asymmetric_ball_phantom(size: int = 64, fov: float = FOV_MM, centre_mm=(-60.0, -50.0, 70.0), radius_mm: float = 30.0) -> Phantom:
    """Water cylinder body with a dense ball (1000 HU) at ``centre_mm`` = ``(z, y, x)`` in the bundle
    convention (z towards inferior, y towards posterior, x towards patient left); the default puts
    it superior, anterior and on the patient's left: one octant, so any flip is visible."""
    z, y, x = _grid(size, fov)
    shape = (size, size, size)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to((x / 140.0) ** 2 + (y / 110.0) ** 2 <= 1.0, shape)] = 0.0
    cz, cy, cx = centre_mm
    ball = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius_mm**2
    hu[ball] = 1000.0
    empty = np.zeros(shape, dtype=np.uint8)
    return Phantom(hu=hu, lung=empty, vessels=ball.astype(np.uint8), affine=grid_affine(size, fov), params={"centre_mm": list(centre_mm)})


def write_raw_phantom(phantom: Phantom, folder: str | os.PathLike, case_id: str) -> CaseSource:
    """Write the HU volume (int16) and its labels as NIfTI under ``folder``; returns the case source."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, arr, dtype in (("ct", phantom.hu, np.int16), ("lung_label", phantom.lung, np.uint8), ("vessel_label", phantom.vessels, np.uint8)):
        path = folder / (f"{case_id}.nii.gz" if name == "ct" else f"{case_id}_{name}.nii.gz")
        img = nib.Nifti1Image(np.round(arr).astype(dtype), phantom.affine)
        img.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            img.to_filename(tmp)
        paths[name] = str(path)
    return CaseSource(case_id, paths["ct"], labels={"lung_label": paths["lung_label"], "vessel_label": paths["vessel_label"]})


def make_phantom_set(
    out: str | os.PathLike,
    n: int = 12,
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
    protocol: Protocol | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    progress: bool = True,
) -> dict:
    """Generate ``n`` phantoms (seeds ``seed .. seed + n - 1``) in ``out/raw`` and prepare them into
    ``out`` exactly as real data (same protocol, DRRs, lung masks), with a seeded split.
    ``protocol`` defaults to :meth:`Protocol.build` at ``size`` (lazy resampling: the phantoms
    already lie on the protocol's grid)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    protocol = protocol or Protocol.build(size, lazy=True)
    raw = Path(out) / "raw"
    sources = []
    for i in range(n):
        case_id = f"phantom_{seed + i:04d}"
        ct_path = raw / f"{case_id}.nii.gz"
        if ct_path.exists() and (raw / f"{case_id}_vessel_label.nii.gz").exists():
            labels = {k: str(raw / f"{case_id}_{k}.nii.gz") for k in ("lung_label", "vessel_label")}
            sources.append(CaseSource(case_id, str(ct_path), labels=labels))
        else:
            sources.append(write_raw_phantom(make_phantom(seed + i, size=size), raw, case_id))
    return prepare(sources, out, protocol, workers=workers, split="seeded", seed=seed, fractions=fractions, progress=progress)
