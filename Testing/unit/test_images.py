"""Image I/O: every supported format keeps geometry; CT becomes clipped float HU; bad input
is named."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LungDeepRegLib.errors import InputError
from LungDeepRegLib.io.geometry import case_grid, geometry_table
from LungDeepRegLib.io.images import read_image, read_raw_image, write_image


def small_ct(shared_data) -> sitk.Image:
    image = sitk.ReadImage(str(shared_data / "totalseg" / "example_ct.nii.gz"))
    return image[20:60, 30:70, 40:70]


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_formats_keep_geometry_and_values(shared_data, tmp_path, suffix):
    original = small_ct(shared_data)
    assert original.GetDirection()[0] == -1.0  # a non-identity direction to keep
    path = write_image(original, tmp_path / f"ct{suffix}")
    image = read_image(path)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(image, original)
    expected = np.clip(sitk.GetArrayFromImage(original), -1024, 3071)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"ct{suffix}"] + (["ct.zraw"] if suffix == ".mhd" else []))


def test_ct_is_clipped_to_hu_range(tmp_path):
    array = np.full((4, 5, 6), 5000, dtype=np.int16)
    array[0] = -3000
    path = write_image(sitk.GetImageFromArray(array), tmp_path / "x.nrrd")
    values = sitk.GetArrayFromImage(read_image(path))
    assert values.min() == -1024 and values.max() == 3071


def test_dicom_series_folder(shared_data):
    image = read_image(shared_data / "cip" / "ct-64-dicom")
    reference = sitk.ReadImage(str(shared_data / "cip" / "ct-64.nrrd"))
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-3)


def test_dirlab_raw_image_with_shipped_geometry(shared_data, tmp_path):
    grid = case_grid("dirlab", 1)
    assert grid.size == (256, 256, 94) and grid.spacing == (0.97, 0.97, 2.5)
    stored = np.random.default_rng(0).integers(0, 3000, grid.shape, dtype=np.int16)
    path = tmp_path / "case1_T00_s.img"
    stored.astype("<i2").tofile(path)
    image = read_raw_image(path, grid.size, grid.spacing)
    assert image.GetOrigin() == (0.0, 0.0, 0.0)
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.clip(stored - 1024.0,
                                                                         -1024, 3071))
    assert "published_initial_tre_mm" in geometry_table("dirlab")


def test_raw_image_with_wrong_size_is_named(tmp_path):
    path = tmp_path / "copd1_iBHCT.img"
    np.zeros(1000, dtype=np.int16).tofile(path)
    with pytest.raises(InputError, match="copd1_iBHCT.img.*file size 2000 bytes"):
        read_raw_image(path, (512, 512, 121), (0.625, 0.625, 2.5))


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((20, 30), np.float32), "2-D image"),
        (np.zeros((3, 4, 5, 6), np.float32), "4-D image"),
        (np.where(np.arange(120).reshape(4, 5, 6) % 7, np.nan, 1).astype(np.float32),
         "NaN or infinite"),
    ],
)
def test_bad_images_are_named(tmp_path, array, problem):
    # NRRD keeps NaN (ITK's NIfTI reader turns NaN into 0)
    path = tmp_path / "bad.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    with pytest.raises(InputError, match=f"bad.nrrd.*{problem}"):
        read_image(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="nothere.nrrd: file not found"):
        read_image(tmp_path / "nothere.nrrd")
    junk = tmp_path / "junk.nrrd"
    junk.write_text("not an image")
    with pytest.raises(InputError, match="junk.nrrd: cannot be read"):
        read_image(junk)


def test_label_map_kind(shared_data):
    labels = read_image(shared_data / "cip" / "wholeLung-64.nrrd", kind="label")
    assert labels.GetPixelID() in (sitk.sitkUInt8, sitk.sitkUInt16)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= set(range(65536))


def test_a_failed_itk_write_is_an_os_error_naming_the_file_and_leaves_nothing(tmp_path):
    """ITK's writers raise RuntimeError (a full disk reads "H5Dwrite failed"); the CLI
    prints an OSError as ``error: <file>: <problem>`` without a traceback."""
    target = tmp_path / "image.unknownformat"
    with pytest.raises(OSError) as raised:
        write_image(sitk.Image(4, 4, 4, sitk.sitkFloat32), target)
    assert raised.value.filename == str(target) and "cannot be written" in raised.value.strerror
    assert list(tmp_path.iterdir()) == []  # no temporary or half-written file is left
