"""Image data modules: the embedded digits, and the user's own .npz files and PNG folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules import DigitsDataModule, ImageFileDataModule

PIL = pytest.importorskip("PIL.Image")


# --- digits ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=64, val_fraction=0.1, seed=0)
    dm.setup()
    return dm


def test_digits_sizes_range_and_labels(digits):
    assert digits.data_shape == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.train_dataset) + len(digits.val_dataset) == 1797
    assert len(digits.val_dataset) == 180
    images = torch.cat([digits.real_images("train"), digits.real_images("val")])
    assert images.dtype == torch.float32 and images.min() == -1.0 and images.max() == 1.0
    labels = torch.cat([digits.train_dataset.labels, digits.val_dataset.labels])
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(10))


def test_digits_batches_are_x_y(digits):
    x, y = next(iter(digits.train_dataloader()))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.long


def test_digits_split_is_deterministic_and_disjoint(digits):
    again = DigitsDataModule(seed=0)
    torch.testing.assert_close(again.real_images("val"), digits.real_images("val"))
    other = DigitsDataModule(seed=1)
    assert not torch.equal(other.real_images("val"), digits.real_images("val"))
    train = {tuple(v.tolist()) for v in digits.real_images("train").flatten(1)}
    val = {tuple(v.tolist()) for v in digits.real_images("val").flatten(1)}
    assert len(train & val) < 5  # the digits set itself holds a few exact duplicates


def test_real_images_count_and_errors(digits):
    assert digits.real_images("train", 10).shape == (10, 1, 8, 8)
    with pytest.raises(ValueError, match="split"):
        digits.real_images("test")
    with pytest.raises(ValueError, match="has 180"):
        digits.real_images("val", 1000)


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)


# --- .npz ---------------------------------------------------------------------------------
def _write_npz(path, images, labels=None):
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_layouts_uint8(tmp_path, layout):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(10, 3, 6, 6), dtype=np.uint8)
    images = {"nhw": base[:, 0], "nhwc": base.transpose(0, 2, 3, 1), "nchw": base}[layout]
    dm = ImageFileDataModule(_write_npz(tmp_path / "d.npz", images), batch_size=4, val_fraction=0.2)
    channels = 1 if layout == "nhw" else 3
    assert dm.data_shape == (channels, 6, 6) and dm.num_classes is None
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, channels, 6, 6) and x.dtype == torch.float32 and torch.all(y == 0)
    every = torch.cat([dm.real_images("train"), dm.real_images("val")])
    assert len(every) == 10 and every.min() >= -1 and every.max() <= 1
    expected = torch.from_numpy(base[:, :channels].astype(np.float32) / 127.5 - 1)
    found = sorted(every.flatten(1).tolist())
    assert found == sorted(expected.flatten(1).tolist())


def test_npz_float_labels_resize_and_channels(tmp_path):
    images = np.linspace(0, 1, 8 * 4 * 4, dtype=np.float32).reshape(8, 4, 4)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    dm = ImageFileDataModule(_write_npz(tmp_path / "f.npz", images, labels), batch_size=8, val_fraction=0.25,
                             image_size=8, channels=3)
    assert dm.data_shape == (3, 8, 8) and dm.num_classes == 3
    x = torch.cat([dm.real_images("train"), dm.real_images("val")])
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9  # [0, 1] floats mapped to [-1, 1]
    assert len(dm.train_dataset) == 6 and sorted(dm.val_dataset.labels.tolist() + dm.train_dataset.labels.tolist()) == sorted(labels.tolist())


@pytest.mark.parametrize("images,message", [
    (np.full((2, 4, 4), 3.0, dtype=np.float32), r"\[0, 1\] or \[-1, 1\]"),
    (np.zeros((2, 5, 4, 7), dtype=np.uint8), "expected"),
    (np.zeros((0, 4, 4), dtype=np.uint8), "empty"),
])
def test_npz_bad_contents_raise_value_error(tmp_path, images, message):
    dm = ImageFileDataModule(_write_npz(tmp_path / "bad.npz", images))
    with pytest.raises(ValueError, match=message):
        dm.data_shape


def test_npz_without_images_key_and_unreadable_file(tmp_path):
    np.savez(tmp_path / "nokey.npz", pictures=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="no 'images' array"):
        ImageFileDataModule(tmp_path / "nokey.npz").setup()
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz"):
        ImageFileDataModule(tmp_path / "junk.npz").setup()


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "digits.npz"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFileDataModule(str(missing)).setup()


# --- folders -------------------------------------------------------------------------------
def _write_png(path, value, size=(5, 5), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.new(mode, size, value).save(path)


def test_png_folder_with_class_subfolders(tmp_path):
    for k, name in enumerate(["cat", "dog"]):
        for i in range(3):
            _write_png(tmp_path / name / f"{i}.png", 40 * k + i)
    dm = ImageFileDataModule(tmp_path, batch_size=2, val_fraction=0.0)
    assert dm.data_shape == (1, 5, 5) and dm.num_classes == 2 and dm.class_names == ["cat", "dog"]
    x = dm.real_images("train")
    expected = torch.tensor([0, 1, 2, 40, 41, 42], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(x[:, 0, 0, 0], expected)
    assert dm.train_dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_png_folder_flat_colour_resized(tmp_path):
    _write_png(tmp_path / "a.png", (255, 0, 0), size=(6, 4), mode="RGB")
    _write_png(tmp_path / "b.PNG", 128, size=(3, 3))
    dm = ImageFileDataModule(tmp_path, batch_size=2, val_fraction=0.0, image_size=4)
    assert dm.data_shape == (3, 4, 4) and dm.num_classes is None
    red = dm.real_images("train")[0]
    torch.testing.assert_close(red[:, 1, 1], torch.tensor([1.0, -1.0, -1.0]))
    gray = dm.real_images("train", 2)[1]
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])


def test_png_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no .png"):
        ImageFileDataModule(tmp_path).setup()
    _write_png(tmp_path / "a.png", 1, size=(4, 4))
    _write_png(tmp_path / "b.png", 1, size=(5, 5))
    with pytest.raises(ValueError, match="image_size"):
        ImageFileDataModule(tmp_path).setup()
    (tmp_path / "b.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="b.png"):
        ImageFileDataModule(tmp_path).setup()
