"""The typed protocol (duolift_bundle/geometry.py): derived sizes, world placement, the X-ray size
rule, validation, and a config override of one field reaching the objects that use it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT
from duolift_bundle.geometry import CTProtocol, DRRGeometry, Protocol, grid_affine
from monai.bundle import ConfigParser


@pytest.mark.parametrize("size, voxel", [(128, 2.5), (64, 5.0), (256, 1.25)])
def test_voxel_size_and_field_follow_from_the_protocol(size, voxel):
    p = Protocol.build(size)
    assert p.ct.fov_mm == 320.0 and p.ct.voxel_mm == voxel and p.xray_size == size
    aff = p.ct.affine()
    # nibabel's own reading of the affine: axis codes and voxel sizes
    import nibabel as nib

    assert nib.aff2axcodes(aff) == ("I", "P", "L")
    np.testing.assert_allclose(nib.affines.voxel_sizes(aff), voxel)
    # the cube is centred on the world origin: first and last voxel centres are mirror images
    first, last = aff @ [0, 0, 0, 1], aff @ ([size - 1] * 3 + [1])
    np.testing.assert_allclose(first[:3], -last[:3])
    # the outer faces of the cube lie 160 mm from the origin
    np.testing.assert_allclose(np.abs(aff @ [-0.5, -0.5, -0.5, 1])[:3], 160.0)


def test_build_routes_each_setting_to_its_dataclass():
    p = Protocol.build(64, z_anchor="center", sad=600.0, normalize="fixed", output_size=128)
    assert p.ct.z_anchor == "center" and p.drr.geometry.sad == 600.0 and p.drr.normalize == "fixed"
    assert p.xray_size == 128 and p.size == 64  # an explicit X-ray size wins over the rule
    assert Protocol(**p.to_dict()) == p  # meta.json round trip
    with pytest.raises(ValueError, match=r"unknown protocol setting\(s\) \['sadd'\]"):
        Protocol.build(sadd=600.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CTProtocol(z_anchor="top"), "z_anchor must be one of"),
        (lambda: CTProtocol(hu_window=(100, -100)), "hu_window must be an increasing pair"),
        (lambda: CTProtocol(spacing=0), "positive spacing"),
        (lambda: DRRGeometry(sad=1000.0, sid=900.0), "0 < sad < sid"),
        (lambda: Protocol.build(normalize="zscore"), "DRR normalize must be one of"),
    ],
)
def test_impossible_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_grid_affine_matches_the_phantom_grid():
    """Phantoms are drawn on the protocol's grid: voxel (i, j, k) of a 64^3 phantom sits at
    z = +(i - 31.5) * 5 mm towards inferior, i.e. RAS z = -(i - 31.5) * 5."""
    aff = grid_affine(64, 320.0)
    np.testing.assert_allclose(aff @ [10, 20, 30, 1], [-(30 - 31.5) * 5, -(20 - 31.5) * 5, -(10 - 31.5) * 5, 1])


def test_a_protocol_override_reaches_the_projector_and_the_data_route():
    """--protocol#sad 600 --protocol#z_anchor center on the command line: the one protocol object
    of the config carries them to every user (here: the projection consistency's projector and
    the data route's arguments)."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(ROOT), "protocol#sad": 600.0, "protocol#z_anchor": "center", "size": 64})
    consistency = parser.get_parsed_content("postprocessing").transforms[0]
    assert consistency.projector.geometry.sad == 600.0 and consistency.projector.geometry.output_size == 64
    assert parser.get_parsed_content("preprocessing").protocol.ct.z_anchor == "center"
