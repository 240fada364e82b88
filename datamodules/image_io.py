"""Read a user's images from an .npz file or a folder of PNG/JPEG files into one tensor.

Everything returns `LoadedImages`: images [N, C, H, W] stored either as uint8 (0..255,
what 8-bit files hold, four times smaller in memory) or as float32 already in [-1, 1],
plus optional integer labels. `to_unit_range` turns either into float32 in [-1, 1].
Errors name the file and say what is accepted, since these are the user's own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.nn import functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNEL_COUNTS = (1, 3, 4)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


@dataclass
class LoadedImages:
    """images [N, C, H, W] (uint8 0..255 or float32 in [-1, 1]); labels [N] long or None; class names if from folders."""

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    class_names: Optional[list[str]] = None


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]; float tensors (already in [-1, 1]) -> float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 127.5 - 1.0
    return images.to(torch.float32)


def load_images(path, image_size: Optional[int] = None, channels: Optional[int] = None) -> LoadedImages:
    """Load an .npz file or an image folder, then resize to image_size x image_size and set the channel count."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"image data path {str(path)!r} does not exist (give an .npz file or a folder of PNG/JPEG files)")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be None (keep), 1 (grayscale) or 3 (RGB), got {channels!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be None (keep) or a positive int, got {image_size!r}")
    if path.is_dir():
        return read_folder(path, image_size, channels)
    if path.suffix.lower() == ".npz":
        loaded = read_npz(path)
        loaded.images = set_channels(loaded.images, channels)
        if image_size is not None and tuple(loaded.images.shape[-2:]) != (image_size, image_size):
            loaded.images = resize(loaded.images, image_size)
        return loaded
    raise ValueError(f"image data path {str(path)!r} is neither a folder nor an .npz file")


# --- .npz ---------------------------------------------------------------------------
def read_npz(path: Path) -> LoadedImages:
    """Key 'images' ([N, H, W], [N, H, W, C] or [N, C, H, W]; uint8 or float) and optional 'labels' [N]."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as err:  # numpy raises several types for a damaged or foreign file
        raise ValueError(f"cannot read {str(path)!r} as an .npz file: {err}") from err
    if "images" not in arrays:
        raise ValueError(f"{str(path)!r} has no 'images' array (found keys: {sorted(arrays) or 'none'})")
    images = _scale_array(_to_nchw(arrays["images"], path), path)
    labels = _check_labels(arrays["labels"], images.shape[0], path) if "labels" in arrays else None
    return LoadedImages(images, labels)


def _to_nchw(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in CHANNEL_COUNTS:
        array = array.transpose(0, 3, 1, 2)
    elif not (array.ndim == 4 and array.shape[1] in CHANNEL_COUNTS):
        raise ValueError(f"'images' in {str(path)!r} has shape {array.shape}; expected [N, H, W], [N, H, W, C] "
                         f"or [N, C, H, W] with C in {CHANNEL_COUNTS}")
    if array.shape[0] == 0:
        raise ValueError(f"'images' in {str(path)!r} is empty")
    return np.ascontiguousarray(array)


def _scale_array(array: np.ndarray, path: Path) -> torch.Tensor:
    """Integers must be 0..255 (kept as uint8); floats in [0, 1] or [-1, 1] become float32 in [-1, 1]."""
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"integer images in {str(path)!r} must lie in 0..255, got {array.min()}..{array.max()}")
        return torch.from_numpy(array.astype(np.uint8))
    if array.dtype.kind != "f":
        raise ValueError(f"'images' in {str(path)!r} has dtype {array.dtype}; use uint8 0..255 or float in [0, 1] / [-1, 1]")
    lo, hi = float(array.min()), float(array.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -1.0 and hi <= 1.0):
        raise ValueError(f"float images in {str(path)!r} must be finite and lie in [0, 1] or [-1, 1], got {lo}..{hi}; "
                         "save uint8 0..255 otherwise")
    tensor = torch.from_numpy(array.astype(np.float32))
    return tensor * 2.0 - 1.0 if lo >= 0.0 else tensor


def _check_labels(labels: np.ndarray, n: int, path: Path) -> torch.Tensor:
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or (n and labels.min() < 0):
        raise ValueError(f"'labels' in {str(path)!r} must be {n} non-negative integers (one per image), "
                         f"got shape {labels.shape} dtype {labels.dtype}")
    return torch.from_numpy(labels.astype(np.int64))


# --- tensors --------------------------------------------------------------------------
def set_channels(images: torch.Tensor, channels: Optional[int]) -> torch.Tensor:
    """Keep (None), or convert to 1 (BT.601 luma) or 3 (gray repeated) channels; alpha is dropped."""
    have = images.shape[1]
    if channels is None or have == channels:
        return images
    x = to_unit_range(images)[:, :3]
    if channels == 3:
        return x if x.shape[1] == 3 else x.repeat(1, 3, 1, 1)
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize to size x size, returned as float32 in [-1, 1]."""
    x = F.interpolate(to_unit_range(images), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(-1.0, 1.0)


# --- folders ----------------------------------------------------------------------------
def _import_pil():
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading a folder of PNG/JPEG images needs Pillow (pip install pillow); "
                          "or save the images as an .npz file with an 'images' array instead") from err
    return Image


def list_image_files(root: Path) -> tuple[list[Path], Optional[list[int]], Optional[list[str]]]:
    """Images directly in root (unlabelled) or in its sub-folders, one per class (labels in sorted folder order)."""
    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)

    top = images_in(root)
    classes = [(d.name, images_in(d)) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    classes = [(name, files) for name, files in classes if files]
    if top and classes:
        raise ValueError(f"{str(root)!r} holds images both directly and in sub-folders; use one layout "
                         "(sub-folders = one class each, or all files at the top)")
    if top:
        return top, None, None
    if not classes:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} files found in {str(root)!r} or its immediate sub-folders")
    files = [f for _, fs in classes for f in fs]
    labels = [k for k, (_, fs) in enumerate(classes) for _ in fs]
    return files, labels, [name for name, _ in classes]


def read_folder(root: Path, image_size: Optional[int], channels: Optional[int]) -> LoadedImages:
    """Decode every image with Pillow; channels=None gives 1 if all images are grayscale, else 3."""
    Image = _import_pil()
    files, labels, class_names = list_image_files(root)
    opened = [_open(Image, f) for f in files]
    if channels is None:
        channels = 1 if all(img.mode in ("1", "L", "LA", "I", "I;16", "F") for img in opened) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(_prepare(Image, img, mode, image_size)) for img in opened]
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise ValueError(f"images in {str(root)!r} have different sizes (e.g. {sizes[0]} and {sizes[-1]}); "
                         "set image_size to resize them all")
    stacked = np.stack(arrays)
    images = torch.from_numpy(stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2).copy())
    label_tensor = torch.tensor(labels, dtype=torch.long) if labels is not None else None
    return LoadedImages(images.contiguous(), label_tensor, class_names)


def _open(Image, path: Path):
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()  # closing the file invalidates img itself in recent Pillow
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
        raise ValueError(f"cannot read image file {str(path)!r}: {err}") from err


def _prepare(Image, img, mode: str, image_size: Optional[int]):
    img = img.convert(mode)
    if image_size is not None and img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return img
