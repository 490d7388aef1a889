"""Point-cloud readers and writer."""
import os

import numpy as np
import pytest

from torchless_export.pointcloud_io import PointCloudError, read_points, write_ply

from conftest import SAMPLES


def test_binary_and_ascii_ply_round_trip(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    for binary in (True, False):
        p = str(tmp_path / ("a%d.ply" % binary))
        write_ply(p, pts, binary=binary)
        np.testing.assert_array_equal(read_points(p).astype(np.float32), pts)


def test_big_endian_double_ply_with_extra_properties(tmp_path):
    pts = np.arange(12, dtype=">f8").reshape(4, 3)
    dt = np.dtype([("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("red", "u1")])
    rows = np.zeros(4, dtype=dt)
    rows["x"], rows["y"], rows["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    p = tmp_path / "be.ply"
    p.write_bytes(b"ply\nformat binary_big_endian 1.0\nelement vertex 4\nproperty double x\nproperty double y\n"
                  b"property double z\nproperty uchar red\nend_header\n" + rows.tobytes())
    np.testing.assert_array_equal(read_points(str(p)), pts)


def test_truncated_binary_ply_is_reported(tmp_path):
    p = tmp_path / "t.ply"
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nproperty float y\n"
                  b"property float z\nend_header\n" + b"\0" * 100)
    with pytest.raises(PointCloudError, match="truncated"):
        read_points(str(p))


def test_xyz_text_takes_first_three_columns(tmp_path):
    p = tmp_path / "k.xyz"
    p.write_text("1 2 3 0 0 1\n4 5 6 0 1 0\n")
    np.testing.assert_array_equal(read_points(str(p)), [[1, 2, 3], [4, 5, 6]])


def test_pcd_binary_compressed_sample_reads():
    path = os.path.join(SAMPLES, "pcl", "milk.pcd")
    if not os.path.exists(path):
        pytest.skip("samples not fetched (scripts/fetch_samples.sh)")
    pts = read_points(path)
    assert pts.shape == (12575, 3) and np.all(np.isfinite(pts))
