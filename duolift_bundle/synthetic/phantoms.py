"""Seeded synthetic chest CT phantoms in HU with ground-truth lung and vessel labels, made to
look like real chests (the realism report, ``scripts/phantom_realism.py``, measures them against
the shared real CTs; every range of :data:`PHANTOM_RANGES` comes from it).

Each phantom is built analytically on a ``size``^3 grid covering ``fov`` mm (default 320 mm, the
protocol's field of view) in the bundle's axis convention (``(D, H, W)`` = superior->inferior,
anterior->posterior, right->left). Anatomy, every dimension drawn from the seed:

- body: superellipse cross-section filling most of the field, wider at the shoulders, breast
  tissue in a third of them; subcutaneous fat (thinner over the back), a muscle layer, visceral
  and mediastinal fat inside; arms up (beside the head), down (at the sides) or out of the field;
- diaphragm domes (the right one higher) with the posterior recess far below them; liver under
  the right dome, stomach (with an air bubble in half of them) and spleen under the left, bowel in
  the visceral fat;
- lungs: the thoracic cavity above the domes, tapering to the apex, minus the mediastinum;
  parenchyma with a gravity gradient and smooth texture (-880..-830 HU);
- heart with chambers and epicardial fat; ascending aorta, arch and descending aorta, pulmonary
  trunk, superior vena cava;
- trachea and a tapering bronchial tree with walls; tapering pulmonary vessel trees from each
  hilum, kept inside the lungs;
- vertebral bodies (cortex + cancellous bone) with discs, spinal canal, pedicles / laminae,
  transverse and spinous processes; ribs sloping down towards the front, with costal cartilage
  near the sternum; sternum, clavicles, scapulae;
- soft-tissue texture, partial-volume blur, scanner noise; the scanner's reconstruction circle
  and a scan length that may end above the field's bottom (air below).

Labels: ``lung`` (1 = right, 2 = left, vessels inside the lungs included; airways excluded) and
``vessels`` (1 inside the lung vessel trees). A phantom of 128^3 takes about 2 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from duolift_bundle.datasets.prepare import prepare
from duolift_bundle.errors import ConfigError
from duolift_bundle.geometry import CTProtocol, Protocol, grid_affine
from duolift_bundle.inputs.discovery import CaseSource
from duolift_bundle.io_utils import atomic_path
from scipy import ndimage as ndi

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
        _vessel_tree(
            rng, end, child, length * rng.uniform(0.68, 0.82), radius * rng.uniform(0.68, 0.78), depth - 1, segments
        )


def _superellipse(x, y, ax, ay, n):
    """Superellipse radius ``(|x/ax|^n + |y/ay|^n)^(1/n)``: 1 on the outline, 0 at the centre."""
    return (np.abs(x / ax) ** n + np.abs(y / ay) ** n) ** (1.0 / n)


def _ellipsoid(z, y, x, centre, radii):
    cz, cy, cx = centre
    rz, ry, rx = radii
    return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _smooth_noise(rng, shape, sigma_vox: float) -> np.ndarray:
    """Zero-mean, unit-SD Gaussian-smoothed noise (tissue texture)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=max(sigma_vox, 0.5))
    return field / (field.std() + 1e-6)


#: Phantom parameter ranges (mm, HU), each set from the realism report of the three shared real CTs
#: (``scripts/phantom_realism.py``; model card "Phantoms against real chests"): real body width
#: 310-320 mm (the body fills the 320 mm field), depth 245-265 mm, scan length 262-308 mm, lung
#: height 248-252 mm with the apex 114-134 mm above the field centre and the lowest lung voxel
#: 116-131 mm below it, fat 36-49 % and soft tissue 29-33 % of the body, soft tissue median
#: 27-32 HU with SD 30-33 HU, bone median 318-338 HU, lung median -878..-834 HU. Ranges are wider
#: than the three cases: the models must generalise beyond them.
PHANTOM_RANGES: dict[str, tuple[float, float]] = {
    "body_ax": (148.0, 180.0),  # half width incl. arms-down soft tissue (clipped by the field)
    "body_ay": (114.0, 138.0),  # half depth
    "body_y0": (-8.0, 8.0),  # centre offset, + posterior
    "body_x0": (-3.0, 3.0),
    "squareness": (2.2, 3.2),  # superellipse exponent of the outline
    "fat": (20.0, 44.0),  # subcutaneous fat thickness
    "muscle": (8.0, 16.0),
    "scan_length": (250.0, 340.0),  # >= 320: the body reaches the bottom of the field
    "fov_radius": (158.0, 185.0),  # the scanner's reconstruction circle
    "lung_top": (-147.0, -123.0),
    "dome_right": (0.0, 45.0),  # right diaphragm dome peak (+ inferior)
    "dome_drop": (5.0, 25.0),  # left dome below the right one
    "recess": (112.0, 134.0),  # posterior costophrenic recess
    "heart_r": (46.0, 60.0),
    "lung_hu": (-880.0, -830.0),
    "soft_hu": (8.0, 24.0),
    "noise_hu": (10.0, 22.0),
    "texture_hu": (16.0, 24.0),
}


def make_phantom(seed: int, size: int = 128, fov: float = FOV_MM, noise_hu: float | None = None) -> Phantom:
    """Generate one seeded chest phantom (see the module docstring).

    Args:
        seed: random seed; the same seed always gives the same phantom.
        size: voxels per side.
        fov: field of view in mm (voxel size ``fov / size``).
        noise_hu: standard deviation of the scanner noise (default: drawn from
            :data:`PHANTOM_RANGES`).
    """
    if size < 16:
        raise ConfigError(f"phantom size must be >= 16, got {size}")
    rng = np.random.default_rng(seed)
    z, y, x = _grid(size, fov)
    shape = (size, size, size)
    vox = fov / size
    p = {k: float(rng.uniform(*r)) for k, r in PHANTOM_RANGES.items()}
    if noise_hu is not None:
        p["noise_hu"] = float(noise_hu)
    p["arms"] = str(rng.choice(["up", "down", "absent"], p=[0.6, 0.25, 0.15]))
    p["breasts"] = bool(rng.random() < 0.35)
    p["stomach_air"] = bool(rng.random() < 0.5)
    full = lambda m: np.broadcast_to(m, shape)  # noqa: E731
    # --- body: superellipse cross-section, wider at the shoulders, outline layers by depth
    widen = 1.0 + 0.07 * np.clip((-z - 60.0) / 100.0, 0.0, 1.0) - 0.03 * np.clip((z - 60.0) / 100.0, 0.0, 1.0)
    ax, ay = p["body_ax"] * widen, p["body_ay"] * np.ones_like(widen)
    xb, yb = x - p["body_x0"], y - p["body_y0"]
    r = _superellipse(xb, yb, ax, ay, p["squareness"])
    depth = (1.0 - r) * np.sqrt(ax * ay)  # ~ distance under the skin (mm)
    fat_t = p["fat"] * np.where(yb > 0, 0.55, 1.0)  # thinner over the back
    body = r <= 1.0
    if p["breasts"]:
        for side in (-1.0, 1.0):
            breast = _ellipsoid(
                z,
                y,
                x,
                (rng.uniform(-30, 10), p["body_y0"] - p["body_ay"] + 12.0, side * rng.uniform(55, 80)),
                (55.0, rng.uniform(25, 45), 55.0),
            )
            body = body | breast
    hu = np.full(shape, -1000.0, dtype=np.float32)
    soft = p["soft_hu"]
    hu[full(body)] = -110.0
    muscle = full(depth >= fat_t) & full(body)
    hu[muscle] = soft + 5.0
    cavity_d = fat_t + p["muscle"] + 12.0  # inner surface of the chest wall
    cavity = full(depth >= cavity_d)
    hu[cavity] = -95.0  # mediastinal / visceral fat, organs painted over it
    # --- diaphragm domes: z of the lung base over (y, x); lungs above, abdomen below
    cx_dome = 0.45 * p["body_ax"]
    dome = np.where(x < 0, p["dome_right"], p["dome_right"] + p["dome_drop"])
    bowl = ((np.abs(x) - cx_dome) / (0.55 * p["body_ax"])) ** 2 + (
        (y - p["body_y0"] + 10.0) / (0.8 * p["body_ay"])
    ) ** 2
    z_base = (
        dome
        + (p["recess"] - dome) * np.clip(bowl, 0.0, 1.0)
        + 25.0 * np.clip((y - p["body_y0"]) / p["body_ay"], 0.0, 1.0)
    )
    below = (z > z_base) & cavity
    # abdomen: liver (right, across the midline in front), stomach and spleen (left), bowel in fat
    liver = below & full(x < 25.0 - 0.4 * (y - p["body_y0"])) & (z < z_base + rng.uniform(120, 170))
    hu[liver] = rng.uniform(45, 58)
    stomach_c = (
        p["dome_right"] + p["dome_drop"] + rng.uniform(35, 60),
        p["body_y0"] - rng.uniform(5, 30),
        rng.uniform(45, 70),
    )
    stomach = (
        _ellipsoid(z, y, x, stomach_c, (rng.uniform(35, 50), rng.uniform(30, 40), rng.uniform(30, 45))) & below & ~liver
    )
    hu[stomach] = soft
    if p["stomach_air"]:
        hu[stomach & (z < stomach_c[0] - 12.0)] = -1000.0
    spleen = (
        _ellipsoid(
            z, y, x, (stomach_c[0] + 10.0, p["body_y0"] + 0.45 * p["body_ay"], 0.62 * p["body_ax"]), (45.0, 30.0, 20.0)
        )
        & below
    )
    hu[spleen] = soft + 10.0
    bowel = below & ~liver & ~stomach & ~spleen & (_smooth_noise(rng, shape, 6.0 / vox) > 0.6)
    hu[bowel] = soft - 5.0
    # --- lungs: the thoracic cavity above the diaphragm, tapering to the apex, minus the mediastinum
    lung = np.zeros(shape, dtype=np.uint8)
    apex = np.clip((z - p["lung_top"]) / 45.0, 0.0, 1.0)
    lung_x = 0.5 * p["body_ax"]
    for label, side in ((1, -1.0), (2, 1.0)):
        e = ((x - side * lung_x) / (0.5 * p["body_ax"])) ** 2 + ((y - p["body_y0"]) / (0.9 * p["body_ay"])) ** 2
        m = cavity & (z >= p["lung_top"]) & (z <= z_base) & (e <= apex) & full(side * x > 0)
        lung[m] = label
    mediastinum = full(np.abs(x - 5.0) < 20.0 + 10.0 * np.clip((z + 60.0) / 60.0, 0.0, 1.0)) & full(
        y - p["body_y0"] < 0.55 * p["body_ay"]
    )
    lung[mediastinum] = 0
    # --- heart (myocardium, chambers, epicardial fat) and great vessels
    heart_c = (p["dome_right"] - rng.uniform(20, 40), p["body_y0"] - rng.uniform(15, 35), rng.uniform(12, 32))
    hr = p["heart_r"]
    heart_fat = _ellipsoid(z, y, x, heart_c, (hr * 1.05 + 5, hr * 0.85 + 5, hr * 1.1 + 5))
    heart = _ellipsoid(z, y, x, heart_c, (hr * 1.05, hr * 0.85, hr * 1.1))
    chambers = _ellipsoid(z, y, x, heart_c, (hr * 0.75, hr * 0.6, hr * 0.8))
    lung[heart_fat] = 0
    hu[heart_fat] = -90.0
    hu[heart] = soft + 10.0
    hu[chambers] = soft
    vessels_big = np.zeros(shape, dtype=bool)
    spine_y = p["body_y0"] + p["body_ay"] - p["fat"] * 0.55 - p["muscle"] - rng.uniform(38, 50)
    top = (heart_c[0] - 0.8 * hr, heart_c[1] + 10.0, heart_c[2] - 20.0)
    arch = (p["lung_top"] + rng.uniform(60, 80), p["body_y0"] + 5.0, 8.0)
    r_ao = rng.uniform(11, 15)
    _paint_segment(vessels_big, z, y, x, top, arch, r_ao)  # ascending aorta
    _paint_segment(vessels_big, z, y, x, arch, (arch[0] + 10.0, spine_y - 25.0, 22.0), r_ao)  # arch
    _paint_segment(
        vessels_big, z, y, x, (arch[0] + 10.0, spine_y - 25.0, 22.0), (200.0, spine_y - 28.0, 12.0), r_ao * 0.9
    )  # descending
    _paint_segment(
        vessels_big, z, y, x, (top[0], top[1] - 10.0, top[2] + 25.0), (top[0] - 35.0, top[1], 20.0), 13.0
    )  # pulmonary trunk
    _paint_segment(
        vessels_big, z, y, x, (-170.0, p["body_y0"] - 10.0, -25.0), (top[0], top[1], -25.0), 9.0
    )  # superior vena cava
    hu[vessels_big] = soft + 5.0
    lung[vessels_big] = 0
    # --- airways: trachea and a tapering bronchial tree (air, thin walls)
    airway = np.zeros(shape, dtype=bool)
    walls = np.zeros(shape, dtype=bool)
    carina = np.array([arch[0] + rng.uniform(5, 20), p["body_y0"] - 5.0, 0.0])
    segs: list = [(np.array([-170.0, p["body_y0"] - 15.0, 0.0]), carina, rng.uniform(8, 10))]
    for side in (-1.0, 1.0):
        _vessel_tree(rng, carina, (0.6, 0.1, side * 0.8), rng.uniform(30, 45), 6.5, 2, segs)
    for p0, p1, rad in segs:
        _paint_segment(walls, z, y, x, p0, p1, rad + 1.5)
        _paint_segment(airway, z, y, x, p0, p1, max(rad, 0.6 * vox))
    hu[walls & ~airway & (lung == 0)] = soft
    # --- pulmonary vessel trees from each hilum, tapering
    vessels = np.zeros(shape, dtype=bool)
    v_depth = int(rng.integers(5, 7))
    for side in (-1.0, 1.0):
        hilum = np.array(
            [carina[0] + rng.uniform(10, 30), p["body_y0"] + rng.uniform(-5, 10), side * rng.uniform(35, 48)]
        )
        vsegs: list = []
        for direction in (
            (-0.6, 0.1, side * 0.6),
            (0.8, 0.1, side * 0.4),
            (0.1, -0.7, side * 0.6),
            (0.2, 0.8, side * 0.5),
            (0.9, 0.5, side * 0.2),
        ):
            _vessel_tree(
                rng,
                hilum,
                np.array(direction) + rng.normal(scale=0.15, size=3),
                rng.uniform(30, 45),
                rng.uniform(4.0, 5.5),
                v_depth,
                vsegs,
            )
        for p0, p1, rad in vsegs:
            _paint_segment(vessels, z, y, x, p0, p1, max(rad, 0.6 * vox))
    # lung parenchyma: base density, gravity gradient (denser at the back), smooth texture
    in_lung = lung > 0
    parenchyma = p["lung_hu"] + 0.25 * (y - p["body_y0"]) + 25.0 * _smooth_noise(rng, shape, 3.0 / vox)
    hu[in_lung] = np.broadcast_to(parenchyma, shape)[in_lung]
    vessels &= in_lung
    hu[vessels] = soft + 5.0
    hu[airway] = -1000.0
    lung[airway] = 0
    vessels &= lung > 0
    # --- spine: vertebral bodies (cortex + cancellous), discs, canal, posterior elements
    period = rng.uniform(24, 29)
    disc = full(np.mod(z + rng.uniform(0, period), period) < 5.0)
    rv = np.sqrt((x / 22.0) ** 2 + ((y - spine_y) / 16.0) ** 2)
    vert = full(rv <= 1.0)
    cancellous, cortical = rng.uniform(150, 200), rng.uniform(420, 580)
    hu[vert] = cancellous
    hu[vert & full(rv > 0.82) & ~disc] = cortical
    hu[vert & disc] = soft + 40.0
    post = np.zeros(shape, dtype=bool)
    for sx in (-1.0, 1.0):
        post |= full((np.abs(x - sx * 11.0) <= 4.0) & (y > spine_y + 12.0) & (y < spine_y + 30.0))  # pedicles, laminae
        post |= full((np.abs(x - sx * 28.0) <= 12.0) & (np.abs(y - spine_y - 26.0) <= 4.0))  # transverse processes
    post |= full((np.abs(x) <= 4.0) & (y > spine_y + 28.0) & (y < spine_y + 55.0))  # spinous process
    hu[post & ~disc & full(r <= 1.0)] = 0.5 * (cancellous + cortical)
    hu[full(np.sqrt(x**2 + (y - spine_y - 20.0) ** 2) <= 7.5)] = soft - 10.0  # spinal canal
    # --- ribs with costal cartilage, sternum, clavicles, scapulae
    theta = np.arctan2(yb / ay, xb / ax)  # 0 = patient left, +pi/2 = posterior
    rib_d = fat_t + p["muscle"] + 5.0
    n_ribs = int(rng.integers(10, 13))
    first = p["lung_top"] + 8.0
    step = (p["recess"] - 10.0 - first) / n_ribs
    from_front = np.abs(np.angle(np.exp(1j * (theta + np.pi / 2))))  # 0 at the sternum
    bone_arc = from_front > np.deg2rad(45)
    cartilage_arc = (from_front > np.deg2rad(12)) & ~bone_arc
    rib_hu = rng.uniform(350, 500)
    for i in range(n_ribs):
        z_rib = first + i * step + 45.0 * (1.0 - np.sin(theta)) * 0.5
        tube = ((z - z_rib) / 3.5) ** 2 + ((depth - rib_d) / 3.5) ** 2 <= 1.0
        hu[tube & full(bone_arc) & (lung == 0)] = rib_hu
        hu[tube & full(cartilage_arc) & (lung == 0) & (z < p["recess"])] = soft + 80.0
    sternum = (
        full((np.abs(x) <= 15.0) & (np.abs(depth - rib_d) <= 5.0) & (yb < 0))
        & (z > p["lung_top"] + 20.0)
        & (z < heart_c[0] + 0.8 * hr)
    )
    hu[sternum] = rng.uniform(250, 350)
    for sx in (-1.0, 1.0):
        clav = np.zeros(shape, dtype=bool)
        _paint_segment(
            clav,
            z,
            y,
            x,
            (p["lung_top"] + 15.0, p["body_y0"] - 0.8 * p["body_ay"], sx * 18.0),
            (p["lung_top"] - 5.0, p["body_y0"] - 0.2 * p["body_ay"], sx * 0.85 * p["body_ax"]),
            7.0,
        )
        hu[clav & full(body)] = rib_hu
        scap = full(
            (np.abs(depth - fat_t - 0.5 * p["muscle"]) <= 2.0)
            & (yb > 0.35 * ay)
            & (np.abs(x) > 50.0)
            & (np.abs(x) < 0.85 * p["body_ax"])
        )
        hu[scap & (z > p["lung_top"] - 10.0) & (z < p["lung_top"] + rng.uniform(110, 150)) & full(sx * x > 0)] = rib_hu
    # --- arms: at the sides (down), beside the head (up, top of the scan) or out of the field
    for sx in (-1.0, 1.0):
        if p["arms"] == "down":
            cx_arm = sx * (p["body_ax"] + rng.uniform(30, 50))
            arm_r = np.sqrt((x - cx_arm) ** 2 + (y - p["body_y0"]) ** 2)
            hu[full(arm_r <= 45.0) & (z < p["recess"])] = -100.0
            hu[full(arm_r <= 33.0) & (z < p["recess"])] = soft + 15.0
            hu[full(arm_r <= 9.0) & (z < p["recess"])] = rib_hu
        elif p["arms"] == "up":
            arm = _ellipsoid(
                z, y, x, (p["lung_top"] - 40.0, p["body_y0"] - 20.0, sx * 0.75 * p["body_ax"]), (45.0, 45.0, 42.0)
            )
            hu[arm] = soft + 15.0
    # soft-tissue texture, partial volume, scanner noise, reconstruction circle, scan length
    tissue = (hu > -200.0) & (hu < 200.0)
    hu[tissue] += (p["texture_hu"] * _smooth_noise(rng, shape, 2.0 / vox))[tissue]
    hu = ndi.gaussian_filter(hu, sigma=0.5 * 2.5 / vox)
    hu += rng.normal(scale=p["noise_hu"], size=shape).astype(np.float32)
    outside = full(x**2 + y**2 > p["fov_radius"] ** 2) | (z > -fov / 2.0 + p["scan_length"])
    hu[outside] = -1000.0
    lung[outside] = 0
    vessels &= ~outside
    hu = np.clip(hu, -1024.0, 3000.0).astype(np.float32)
    p.update({"seed": int(seed), "size": int(size), "fov_mm": float(fov), "n_ribs": n_ribs, "vessel_depth": v_depth})
    return Phantom(hu=hu, lung=lung, vessels=vessels.astype(np.uint8), affine=grid_affine(size, fov), params=p)


def asymmetric_ball_phantom(
    size: int = 64, fov: float = FOV_MM, centre_mm=(-60.0, -50.0, 70.0), radius_mm: float = 30.0
) -> Phantom:
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
    return Phantom(
        hu=hu,
        lung=empty,
        vessels=ball.astype(np.uint8),
        affine=grid_affine(size, fov),
        params={"centre_mm": list(centre_mm)},
    )


def write_raw_phantom(phantom: Phantom, folder: str | os.PathLike, case_id: str) -> CaseSource:
    """Write the HU volume (int16) and its labels as NIfTI under ``folder``; returns the case source."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, arr, dtype in (
        ("ct", phantom.hu, np.int16),
        ("lung_label", phantom.lung, np.uint8),
        ("vessel_label", phantom.vessels, np.uint8),
    ):
        path = folder / (f"{case_id}.nii.gz" if name == "ct" else f"{case_id}_{name}.nii.gz")
        img = nib.Nifti1Image(np.round(arr).astype(dtype), phantom.affine)
        img.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            img.to_filename(tmp)
        paths[name] = str(path)
    return CaseSource(
        case_id, paths["ct"], labels={"lung_label": paths["lung_label"], "vessel_label": paths["vessel_label"]}
    )


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
        raise ConfigError(f"n must be >= 1, got {n}")
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
    return prepare(
        sources, out, protocol, workers=workers, split="seeded", seed=seed, fractions=fractions, progress=progress
    )
