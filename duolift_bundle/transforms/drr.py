"""Digitally reconstructed radiographs (DRRs): a batched, differentiable cone-beam projector.

Geometry (X2CT-GAN's DRR set-up, which they ran with ``plastimatch drr``): the isocentre is the
centre of the volume, the source sits ``sad`` mm from it and the flat detector ``sid`` mm from the
source, perpendicular to the central ray; the detector is ``detector_size`` mm wide with
``detector_pixels`` pixels per side and is then area-resampled to ``output_size`` pixels.

Volume convention (:data:`duolift_bundle.constants.VOLUME_AXCODES`): ``(B, 1, D, H, W)`` with D
superior -> inferior, H anterior -> posterior, W patient right -> left; voxel spacing in mm.

Views:

- ``frontal``: rays run along H. PA by default (source posterior, detector anterior). The image
  has rows superior -> inferior and columns patient right -> left: the radiograph as a reader
  looks at it, facing the patient. ``flip_frontal=True`` mirrors the columns (X2CT flipped its
  PA images this way).
- ``lateral``: rays run along W. By default the source is on the patient's right and the
  detector on the left (a left-lateral radiograph). Rows superior -> inferior, columns anterior
  -> posterior: seen from the patient's left side.

Method: Joseph's method (Joseph 1982). For a view whose rays run mostly along one array axis, each
ray crosses every plane of that axis exactly once; the crossing point on plane k is the detector
coordinate scaled by the magnification ``f_k`` (cone beam) or 1 (parallel beam), the volume is
sampled there bilinearly and the samples are summed with the path length per plane,
``spacing * |ray| / SID``. Because the crossing points of one plane form a separable grid,
bilinear sampling of plane k is ``A_rows[k] @ plane_k @ A_cols[k]^T`` with sparse "hat"
interpolation matrices, so the whole projection is two dense matrix products (fast on CPU BLAS
and GPU, and differentiable w.r.t. the volume). Its adjoint, :func:`back_project`, applies the
transposed matrices plane by plane; :func:`lift_matrices` normalises them into the generator's
back-projection lift (one geometry for the projector, the lift and the refinement). Attenuation:
``mu = mu_water * (1 + HU / 1000)``, clipped at 0; the line integral is in units of mu * mm
(dimensionless).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from duolift_bundle.constants import VIEWS
from duolift_bundle.errors import ConfigError, ShapeError
from duolift_bundle.geometry import MU_WATER, CTProtocol, DRRGeometry, Protocol, voxel_spacing
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = [
    "DRRGeometry",
    "hu_to_mu",
    "line_integrals",
    "back_project",
    "lift_matrices",
    "DRRProjector",
    "DRRd",
    "MU_WATER",
]


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    """Linear attenuation (1/mm) from HU: ``mu_water * (1 + HU / 1000)``, clipped at 0."""
    return torch.clamp(mu_water * (1.0 + hu / 1000.0), min=0.0)


def _hat_matrix(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Linear-interpolation weights of sample positions on an ``n``-sample grid.

    Args:
        pos: ``(K, P)`` positions in voxel-index units (0 = first voxel centre).
        n: number of voxels along the axis.

    Returns:
        ``(K, P, n)`` weights ``max(0, 1 - |pos - j|)``: outside the grid they fall to zero,
        exactly like ``grid_sample(..., padding_mode="zeros", align_corners=True)``.
    """
    idx = torch.arange(n, dtype=pos.dtype, device=pos.device)
    return torch.clamp(1.0 - (pos[..., None] - idx).abs(), min=0.0)


def _view_axes(view: str, geometry: DRRGeometry) -> tuple[tuple[int, int, int], float]:
    """The permutation ``(plane, row, col)`` of the volume axes ``(D, H, W)`` for ``view`` and the
    side of the source along the plane axis (+1: the positive side)."""
    if view == "frontal":
        # planes along H (anterior -> posterior); the posterior side is +H; rows D, columns W
        return (1, 0, 2), (1.0 if geometry.frontal_source == "posterior" else -1.0)
    if view == "lateral":
        # planes along W (right -> left); the patient's left side is +W; rows D, columns H
        return (2, 0, 1), (-1.0 if geometry.lateral_source == "right" else 1.0)
    raise ConfigError(f"Unknown DRR view {view!r}; expected one of {VIEWS}")


def _ray_matrices(
    geometry: DRRGeometry,
    view: str,
    shape: Sequence[int],
    spacing: Sequence[float],
    pixels: int,
    pixel_mm: float,
    device=None,
    dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-plane sampling matrices of a ``pixels`` x ``pixels`` detector of pitch ``pixel_mm``.

    Args:
        shape, spacing: the volume grid ``(D, H, W)`` and its voxel size in mm.

    Returns:
        ``(A_rows (K, P, R), A_cols (K, P, C))``: the hat weights with which detector row / column
        p samples the rows / columns of plane k (K planes along the view's ray axis).
    """
    (ak, ar, ac), sign = _view_axes(view, geometry)
    n_planes, n_rows, n_cols = int(shape[ak]), int(shape[ar]), int(shape[ac])
    k = torch.arange(n_planes, dtype=dtype, device=device)
    plane_pos = (k - (n_planes - 1) / 2.0) * float(spacing[ak])
    det = (torch.arange(pixels, dtype=dtype, device=device) - (pixels - 1) / 2.0) * pixel_mm
    if geometry.sad is None:
        mag = torch.ones_like(plane_pos)
    else:
        # distance of plane k from the source over the SID: detector mm -> plane mm
        mag = (geometry.sad - sign * plane_pos) / geometry.sid
    # crossing points of every ray with every plane, in voxel-index units
    row_pos = mag[:, None] * det[None, :] / float(spacing[ar]) + (n_rows - 1) / 2.0  # (K, P)
    col_pos = mag[:, None] * det[None, :] / float(spacing[ac]) + (n_cols - 1) / 2.0  # (K, P)
    return _hat_matrix(row_pos, n_rows), _hat_matrix(col_pos, n_cols)


def _path_lengths(geometry: DRRGeometry, plane_mm: float, device, dtype) -> torch.Tensor:
    """``(P, P)`` path length per plane crossing, ``plane_mm * |ray| / SID`` (parallel: ``plane_mm``)."""
    p = geometry.detector_pixels
    if geometry.sad is None:
        return torch.full((p, p), plane_mm, dtype=dtype, device=device)
    det = (torch.arange(p, dtype=dtype, device=device) - (p - 1) / 2.0) * geometry.pixel_size
    return plane_mm * torch.sqrt(geometry.sid**2 + det[:, None] ** 2 + det[None, :] ** 2) / geometry.sid


def _check_volume(mu: torch.Tensor, name: str) -> None:
    if mu.ndim != 5 or mu.shape[1] != 1:
        raise ShapeError(f"{name} expects a (B, 1, D, H, W) volume, got shape {tuple(mu.shape)}")


def line_integrals(
    mu: torch.Tensor, spacing: Sequence[float], view: str, geometry: DRRGeometry | None = None
) -> torch.Tensor:
    """Ray sums through an attenuation volume at detector resolution (the operator A).

    Args:
        mu: ``(B, 1, D, H, W)`` linear attenuation in 1/mm (the bundle's axis convention).
        spacing: ``(sD, sH, sW)`` voxel size in mm.
        view: ``"frontal"`` or ``"lateral"``.
        geometry: the set-up; X2CT's by default.

    Returns:
        ``(B, P, P)`` line integrals (mu * mm), ``P = geometry.detector_pixels``.
    """
    geometry = geometry or DRRGeometry()
    _check_volume(mu, "line_integrals")
    (ak, ar, ac), _ = _view_axes(view, geometry)
    dtype = mu.dtype if mu.dtype in (torch.float32, torch.float64) else torch.float32
    planes = mu[:, 0].to(dtype).permute(0, ak + 1, ar + 1, ac + 1)  # (B, K, R, C)
    b, k, _, n_cols = planes.shape
    a_rows, a_cols = _ray_matrices(
        geometry, view, mu.shape[2:], spacing, geometry.detector_pixels, geometry.pixel_size, planes.device, dtype
    )
    p = geometry.detector_pixels
    # U_k = A_rows[k] @ plane_k  -> (B, K, P, C); then sum_k U_k @ A_cols[k]^T as ONE matmul
    u = torch.matmul(a_rows, planes)
    u = u.permute(0, 2, 1, 3).reshape(b, p, k * n_cols)  # (B, P, K*C)
    out = torch.matmul(u, a_cols.transpose(1, 2).reshape(k * n_cols, p))  # (B, P, P)
    return out * _path_lengths(geometry, float(spacing[ak]), planes.device, dtype)


def back_project(
    images: torch.Tensor,
    shape: Sequence[int],
    spacing: Sequence[float],
    view: str,
    geometry: DRRGeometry | None = None,
) -> torch.Tensor:
    """The adjoint of :func:`line_integrals` (A^T): detector images smeared back along their rays.

    ``<line_integrals(x), y> = <x, back_project(y)>`` for every volume x and image y.

    Args:
        images: ``(B, P, P)`` detector images, ``P = geometry.detector_pixels``.
        shape: the volume grid ``(D, H, W)``; spacing: its voxel size in mm.

    Returns:
        ``(B, 1, D, H, W)``.
    """
    geometry = geometry or DRRGeometry()
    p = geometry.detector_pixels
    if images.ndim != 3 or tuple(images.shape[1:]) != (p, p):
        raise ShapeError(f"back_project expects (B, {p}, {p}) detector images, got shape {tuple(images.shape)}")
    (ak, ar, ac), _ = _view_axes(view, geometry)
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    y = images.to(dtype) * _path_lengths(geometry, float(spacing[ak]), images.device, dtype)
    a_rows, a_cols = _ray_matrices(geometry, view, shape, spacing, p, geometry.pixel_size, images.device, dtype)
    # plane_k = A_rows[k]^T @ Y @ A_cols[k]  -> (B, K, R, C)
    planes = torch.matmul(torch.matmul(a_rows.transpose(1, 2).unsqueeze(0), y.unsqueeze(1)), a_cols.unsqueeze(0))
    inverse = [0, 0, 0]
    for i, axis in enumerate((ak, ar, ac)):
        inverse[axis] = i + 1
    return planes.permute(0, *inverse).unsqueeze(1)


def lift_matrices(
    geometry: DRRGeometry, view: str, grid: int, fov_mm: float, map_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The back-projection lift of a ``map_size``^2 map of one view onto a ``grid``^3 volume.

    The map is read as the view's detector image at ``map_size`` pixels (pitch
    ``detector_size / map_size``, the projector's area resampling). The adjoint's weights of plane
    k, ``A_rows[k]^T`` and ``A_cols[k]^T``, are normalised so that each voxel receives a weighted
    mean of the detector pixels whose rays cross it (interpolation where the pixels are sparse,
    area averaging where they are dense); a voxel no ray reaches receives 0.

    Returns:
        ``(B_rows (K, R, map_size), B_cols (K, C, map_size))`` with R = C = K = ``grid``: the lifted
        plane k of a map Y is ``B_rows[k] @ Y @ B_cols[k]^T``.
    """
    spacing = (fov_mm / grid,) * 3
    a_rows, a_cols = _ray_matrices(geometry, view, (grid,) * 3, spacing, map_size, geometry.detector_size / map_size)

    def normalised(a: torch.Tensor) -> torch.Tensor:
        at = a.transpose(1, 2)  # (K, n, P)
        return at / at.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    return normalised(a_rows), normalised(a_cols)


class DRRProjector(torch.nn.Module):
    """Batched DRR simulation: CT volume -> one or two radiographs in [0, 1].

    Args:
        protocol: the :class:`~duolift_bundle.geometry.Protocol` (X2CT's 128^3 by default), taken
            whole: its DRR settings (geometry, ``normalize``, ``max_value``, ``flip_frontal``,
            ``mu_water``), its voxel size (the default spacing) and its HU window.
        views: the views to produce, in output-channel order.
        input_range: ``"unit"`` for the data contract's [0, 1] CT (mapped back with the protocol's
            HU window), or ``"hu"``.

    Shapes: ``forward((B, 1, D, H, W)[, spacing]) -> (B, V, output_size, output_size)``; ``spacing``
    (mm, ``(sD, sH, sW)``) overrides the protocol's voxel size for one call.
    """

    def __init__(
        self, protocol: Protocol | None = None, views: Sequence[str] = VIEWS, input_range: str = "unit"
    ) -> None:
        super().__init__()
        self.protocol = protocol or Protocol()
        self.views = tuple(views)
        for v in self.views:
            if v not in VIEWS:
                raise ConfigError(f"Unknown DRR view {v!r}; expected a subset of {VIEWS}")
        if not self.views:
            raise ConfigError("DRRProjector needs at least one view")
        self.input_range = CTProtocol.check_input_range(input_range)
        self.settings = self.protocol.drr
        self.geometry = self.settings.geometry
        self.spacing = (self.protocol.ct.voxel_mm,) * 3

    def attenuation(self, ct: torch.Tensor) -> torch.Tensor:
        hu = self.protocol.ct.as_hu(ct, self.input_range)
        return hu_to_mu(hu, self.settings.mu_water)

    def forward(self, ct: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
        if ct.ndim != 5 or ct.shape[1] != 1:
            raise ShapeError(f"DRRProjector expects a (B, 1, D, H, W) CT, got shape {tuple(ct.shape)}")
        mu = self.attenuation(ct.float() if not ct.is_floating_point() else ct)
        spacing = self.spacing if spacing is None else spacing
        images = []
        for view in self.views:
            img = line_integrals(mu, spacing, view, self.geometry)  # (B, P, P)
            if view == "frontal" and self.settings.flip_frontal:
                img = torch.flip(img, dims=(-1,))
            images.append(img)
        out = torch.stack(images, dim=1)  # (B, V, P, P)
        size = self.geometry.output_size
        if out.shape[-1] != size:
            # area averaging = integration over the larger output pixel (anti-aliased)
            out = F.interpolate(out, size=(size, size), mode="area")
        return self._normalise(out)

    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        if self.settings.normalize == "max":
            peak = img.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
            return img / peak
        if self.settings.normalize == "fixed":
            return torch.clamp(img / self.settings.max_value, 0.0, 1.0)
        return img


class DRRd(MapTransform):
    """Dictionary transform: ``data[key]`` CT ``(1, D, H, W)`` in [0, 1] -> ``data[output_key]``
    ``(V, S, S)``, with the DRR settings and HU window of ``protocol``
    (:class:`~duolift_bundle.geometry.Protocol`; X2CT's by default).

    The voxel spacing is read from the CT's affine (MetaTensor) unless ``spacing`` is given.
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        output_key: str = "xray",
        views: Sequence[str] = VIEWS,
        protocol: Protocol | None = None,
        spacing: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.projector = DRRProjector(protocol, views)
        self.output_key = output_key
        self.spacing = spacing
        self.device = device

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 4 or img.shape[0] != 1:
                raise ShapeError(f"DRRd expects '{key}' of shape (1, D, H, W), got {tuple(img.shape)}")
            spacing = voxel_spacing(img, self.spacing, who="DRRd")
            vol = torch.as_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img, dtype=torch.float32)
            if self.device is not None:
                vol = vol.to(self.device)
            with torch.no_grad():
                xray = self.projector(vol[None], spacing=spacing)[0]
            d[self.output_key] = xray.cpu()
        return d
