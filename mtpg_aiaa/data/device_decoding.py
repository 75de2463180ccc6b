"""JPEG decoding on the scoring device (nvJPEG on CUDA), beside the CPU workers' PIL path.

The default path decodes each image with PIL in the DataLoader workers and applies the
transform there (``AestheticsDataset``). On a GPU the model can outrun a few CPU cores;
here the workers only read the file bytes (``EncodedImageDataset``), and a whole batch is
decoded at once on the device with ``torchvision.io.decode_jpeg(device=...)`` and
preprocessed there (``DeviceDecodingLoader``). Only the ``official`` eval preprocessing
(squash to a square with antialiased bilinear resizing, ImageNet statistics) is
implemented on the device; its outputs match the PIL path within a few levels of 255
(decoders round their IDCT differently, and the resize is PIL's algorithm in float, rounded
to 8 bits as PIL does), not bit for bit: ``docs/performance.md``. Files that are not
JPEGs, and JPEGs the device decoder refuses (e.g. CMYK), are decoded with PIL instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mtpg_aiaa.data.dataset import AestheticsDataset, collate_samples
from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.images import load_rgb_image
from mtpg_aiaa.transforms import IMAGENET_MEAN, IMAGENET_STD

JPEG_MAGIC = b"\xff\xd8\xff"
DEVICE_PREPROCESSING = ("official",)


class EncodedImageDataset(AestheticsDataset):
    """``AestheticsDataset`` whose ``image`` is the file's bytes (uint8 ``[N]``) for a JPEG,
    or for any other format the PIL-decoded pixels (uint8 ``[3, H, W]``); everything else
    as the parent gives it. The header is still read (pixel-count guard, a clear error
    naming a missing or unreadable file). Its ``transform`` is ignored (pass None):
    preprocessing happens on the device."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.transform = _unchanged

    def load_image(self, path: Path) -> torch.Tensor:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise BadInputError(f"Cannot read image {path}: {error}") from error
        if not data.startswith(JPEG_MAGIC):
            return _pil_pixels(path, self.max_pixels)
        _check_jpeg_header(path, self.max_pixels)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _unchanged(image: torch.Tensor) -> torch.Tensor:
    return image


def _check_jpeg_header(path: Path, max_pixels: int) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:  # the header only: no pixel is decoded here
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise BadInputError(f"Cannot read image {path}: {type(error).__name__}: {error}") from error
    if width * height > max_pixels:
        raise BadInputError(f"Image {path} is {width}x{height} = {width * height:,} pixels, above the limit of "
                            f"{max_pixels:,} (decompression-bomb guard); raise max_pixels if the image is genuine")  # fmt: skip


def _pil_pixels(path: Path, max_pixels: int) -> torch.Tensor:
    image = load_rgb_image(path, max_pixels=max_pixels)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def collate_encoded(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate_samples`` with ``image`` left as a list of the samples' tensors (lengths differ)."""
    images = [sample.pop("image") for sample in samples if not sample.get("skipped", False)]
    batch = collate_samples(samples)
    if images:
        batch["image"] = images
    return batch


def decode_images(images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Encoded JPEGs (uint8 ``[N]``) and decoded pixels (uint8 ``[3, H, W]``) -> uint8 RGB
    ``[3, H, W]`` on ``device``; the JPEGs decoded together (one nvJPEG batch on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [i for i, image in enumerate(images) if image.dim() == 1]
    decoded = [image.to(device, non_blocking=True) if image.dim() == 3 else None for image in images]
    if encoded:
        if device.type == "cuda":
            # torchvision's CUDA decoder may write into memory that kernels still queued on
            # this stream are about to read (pytorch/vision#9606): let them finish first. The
            # stream is idle here anyway (predict waits for each batch's scores).
            torch.cuda.current_stream(device).synchronize()
        try:
            outputs = decode_jpeg([images[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
        except Exception:  # noqa: BLE001 - one refused JPEG fails the batch: one by one, with fallbacks
            outputs = [_decode_one(images[i], device) for i in encoded]
        for i, output in zip(encoded, outputs):
            decoded[i] = output
    return decoded


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    import io

    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    for where in dict.fromkeys([device, torch.device("cpu")]):  # the device's decoder, then libjpeg
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=where).to(device)
        except Exception:  # noqa: BLE001 - a refused file, or a torchvision built without the device decoder
            continue
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:  # neither took it (e.g. CMYK): PIL
        pixels = np.asarray(image.convert("RGB")).copy()
    return torch.from_numpy(pixels).permute(2, 0, 1).to(device)


# CUDA's antialiased bilinear kernel holds a whole filter in shared memory and refuses a
# downscale of more than ~190x on one side ("Too much shared memory required"): a panorama
# wider than ~43,000 px. Such images are resized on the CPU (the same filter).
CUDA_ANTIALIAS_MAX_FACTOR = 128


def preprocess_official(images: list[torch.Tensor], image_size: int) -> torch.Tensor:
    """uint8 RGB ``[3, H, W]`` images -> float32 ``[B, 3, S, S]`` as ``transforms._official_eval``:
    squashed to ``S x S`` (antialiased bilinear, rounded to 8 bits as PIL does), ImageNet statistics."""
    device = images[0].device
    resized = [_squash(image, image_size).to(device) for image in images]
    pixels = torch.cat(resized).round_().clamp_(0, 255).div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _squash(image: torch.Tensor, image_size: int) -> torch.Tensor:
    if image.is_cuda and max(image.shape[1:]) > CUDA_ANTIALIAS_MAX_FACTOR * image_size:
        image = image.cpu()
    return F.interpolate(image[None].float(), size=(image_size, image_size), mode="bilinear",
                         antialias=True, align_corners=False)  # fmt: skip


class DeviceDecodingLoader:
    """Wraps a ``DataLoader`` of ``EncodedImageDataset`` batches (``collate_encoded``): each
    batch's ``image`` comes out decoded and preprocessed on ``device`` (``[B, 3, S, S]``).
    ``dataset`` and ``batch_sampler`` are the wrapped loader's, for callers that read them."""

    def __init__(self, loader: DataLoader, device: torch.device, image_size: int, preprocess: str = "official"):
        if preprocess not in DEVICE_PREPROCESSING:
            raise ValueError(f"decoding on the device implements the {DEVICE_PREPROCESSING} preprocessing, "
                             f"not {preprocess!r}; use eval.decode=cpu")  # fmt: skip
        self.loader, self.device, self.image_size = loader, device, image_size
        self.dataset, self.batch_sampler = loader.dataset, loader.batch_sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            if "image" in batch:
                batch["image"] = preprocess_official(decode_images(batch["image"], self.device), self.image_size)
                if self.device.type == "cuda":
                    # The decode and resize kernels are asynchronous: wait for them here, so
                    # their time is counted as decoding (test.py's time split), not as the
                    # model's. It costs no overlap: the model waits for this batch anyway.
                    torch.cuda.synchronize(self.device)
            yield batch
