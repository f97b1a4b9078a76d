"""MONAI data path: cohort rows → dictionary records → transforms → float32 tensors in [0, 1].

spatial_dims=2 (images): DICOM rows load with PydicomReader (data.dicom_reader: its metadata without the
whole-dataset JSON) and NIfTI rows with NibabelReader, chosen per
record from the cohort's `format` column; volumes and multi-frame files contribute their middle slice /
frame; colour becomes grey. Output (N, C, S, S).
spatial_dims=3 (volumes): a DICOM row loads its whole series (`data.volumes`) or multi-frame file, a NIfTI
row its first volume, each with its RAS affine; then Orientation (RAS), optional Spacing (mm), intensity
to [0, 1] and Resize to S³. Output (N, C, S, S, S).
An adopted model's own preprocessing (checkpoint meta["preprocessing"], see adopt.preprocessing) replaces
the fixed path: its loader steps (the bundle's reader, channel and geometry transforms, allow-listed here
too) run, then u = (x - offset) / scale; its intensity step runs inside the model.
With a cache folder, transformed items are kept on disk (MONAI PersistentDataset) keyed by the file's
content hash and the transform settings, so later runs skip decoding (`data.cache`).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, NibabelReader, PersistentDataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RepeatChanneld,
    Resized,
    ScaleIntensityd,
    Spacingd,
)

from medunlearn.data.dicom_reader import PrunedPydicomReader
from medunlearn.errors import DataError
from medunlearn.registry import did_you_mean
from medunlearn.runtime import RunContext

_GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def cohort_records(df: pd.DataFrame, class_names: list[str]) -> list[dict]:
    """Cohort rows → [{"image": path, "label": class index, "image_id", "format"}]; every label must be known."""
    for col in ("path", "label", "image_id"):
        if col not in df.columns:
            raise DataError(f"Expected a cohort with a {col!r} column, but got columns {list(df.columns)}.")
    index = {name: i for i, name in enumerate(class_names)}
    records = []
    for row in df.itertuples(index=False):
        label = str(row.label)
        if label not in index:
            hint = did_you_mean(label, list(class_names)) if label else " Unlabelled rows must be dropped first."
            raise DataError(f"Expected a label in {list(class_names)}, but image {row.image_id} has {label!r}.{hint}")
        fmt = str(getattr(row, "format", "") or ("nifti" if str(row.path).lower().endswith((".nii", ".nii.gz"))
                                                   else "dicom"))
        records.append({"image": str(row.path), "label": index[label], "image_id": str(row.image_id), "format": fmt})
    return records


def middle_grey_2d(arr: torch.Tensor, fmt: str) -> torch.Tensor:
    """One 2D grey plane (H, W) from a loaded array.

    DICOM (pydicom layout): (H, W), (H, W, 3|4) colour, (F, H, W) frames, (F, H, W, 3|4).
    NIfTI: (X, Y), (X, Y, Z), (X, Y, Z, T) → middle Z of the first volume.
    """
    x = torch.as_tensor(arr).float()
    if fmt == "nifti":
        while x.ndim > 3:
            x = x[..., 0]
        return x[..., x.shape[-1] // 2] if x.ndim == 3 else x
    colour = x.ndim == 4 or (x.ndim == 3 and x.shape[-1] in (3, 4) and x.shape[0] > 4)
    if x.ndim == 4 or (x.ndim == 3 and not colour):
        x = x[x.shape[0] // 2]
    if colour:
        x = sum((w * x[..., c] for c, w in enumerate(_GREY)), torch.zeros_like(x[..., 0]))
    return x


def short_reason(exc: BaseException, path: str = "", limit: int = 160) -> str:
    """'Type: message' with the file path (which may identify a patient) removed, cut at a word boundary."""
    text = " ".join(str(exc).replace(path, "<file>").split()) if path else " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LoadMiddleSliced(MapTransform):
    """Load `keys` with the reader for the record's format, keep the middle grey 2D plane (H, W)."""

    def __init__(self, keys: KeysCollection, format_key: str = "format") -> None:
        super().__init__(keys)
        self.format_key = format_key
        # MONAI takes a reader instance (its docstring) though its annotation names classes and strings only
        # (unused-ignore: a MONAI release that fixes the annotation must not fail the type check)
        self.loaders = {
            "dicom": LoadImaged(keys, reader=PrunedPydicomReader(swap_ij=False),  # type: ignore[arg-type, unused-ignore]
                                image_only=True),
            "nifti": LoadImaged(keys, reader=NibabelReader(), image_only=True),  # type: ignore[arg-type, unused-ignore]
        }

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        fmt = str(d.get(self.format_key) or "dicom")
        if fmt not in self.loaders:
            raise DataError(f"Expected format 'dicom' or 'nifti', but got {fmt!r}."
                            f"{did_you_mean(fmt, list(self.loaders))}")
        try:
            d = self.loaders[fmt](d)
        except Exception as exc:  # undecodable pixels (missing codec, truncated file, ...)
            raise DataError(f"Expected decodable pixel data, but image {d.get('image_id', '?')} failed "
                            f"({short_reason(exc, str(d.get(self.keys[0], '')))}).") from exc
        for key in self.key_iterator(d):
            d[key] = middle_grey_2d(d[key], fmt)
        return d


class LoadVolumed(MapTransform):
    """Load `keys` as one grey volume (1, X, Y, Z) MetaTensor carrying its RAS affine."""

    def __init__(self, keys: KeysCollection, format_key: str = "format") -> None:
        super().__init__(keys)
        self.format_key = format_key
        # a reader instance: see LoadMiddleSliced
        self.nifti = LoadImaged(keys, reader=NibabelReader(), image_only=True)  # type: ignore[arg-type, unused-ignore]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from medunlearn.data.volumes import read_dicom_volume

        d = dict(data)
        fmt = str(d.get(self.format_key) or "dicom")
        if fmt not in ("dicom", "nifti"):
            raise DataError(f"Expected format 'dicom' or 'nifti', but got {fmt!r}."
                            f"{did_you_mean(fmt, ['dicom', 'nifti'])}")
        try:
            if fmt == "nifti":
                d = self.nifti(d)
        except Exception as exc:
            raise DataError(f"Expected a readable NIfTI volume, but image {d.get('image_id', '?')} failed "
                            f"({type(exc).__name__}: {str(exc)[:120]}).") from exc
        for key in self.key_iterator(d):
            vol: torch.Tensor
            if fmt == "dicom":
                arr, affine = read_dicom_volume(str(d[key]))
                vol = MetaTensor(torch.from_numpy(arr), affine=torch.as_tensor(affine))
            else:
                loaded = d[key]
                assert isinstance(loaded, torch.Tensor)  # LoadImaged(image_only=True) gives a MetaTensor
                vol = loaded
                while vol.ndim > 3:  # (X, Y, Z, T...): the first volume
                    vol = vol[..., 0]
                if vol.ndim == 2:
                    vol = vol[..., None]
            d[key] = vol.float()[None]
        return d


# MONAI transforms an adopted pipeline may run in the loader (names and typed arguments were checked when
# the bundle was adopted; checked again here because meta.json is input too).
BUNDLE_STEPS = frozenset({"LoadImaged", "EnsureChannelFirstd", "AsChannelFirstd", "RepeatChanneld", "Resized",
                          "CastToTyped", "EnsureTyped", "ToTensord", "ScaleIntensityd", "ScaleIntensityRanged",
                          "NormalizeIntensityd"})


class PixelMapd(MapTransform):
    """u = (x - offset) / scale as a plain float32 tensor (the loader side of the adopted pipeline)."""

    def __init__(self, keys: KeysCollection, scale: float, offset: float) -> None:
        super().__init__(keys)
        self.scale, self.offset = float(scale), float(offset)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key]).as_subclass(torch.Tensor).float()
            d[key] = (x - self.offset) / self.scale
        return d


def bundle_transforms(spec: Mapping) -> Compose:
    """The loader half of an adopted pipeline: its MONAI steps, then the pixel map."""
    import monai.transforms as mt

    steps = []
    for step in spec.get("loader_steps", []):
        name = step.get("name") if isinstance(step, Mapping) else None
        if name not in BUNDLE_STEPS or not isinstance(step.get("args"), Mapping):
            raise DataError(f"Expected loader steps among {sorted(BUNDLE_STEPS)}, but got {name!r} in the "
                            "checkpoint's preprocessing record.")
        args = dict(step["args"])
        if args.get("dtype") is not None:
            args["dtype"] = getattr(torch, str(args["dtype"]))
        try:
            steps.append(getattr(mt, name)(**args))
        except (TypeError, ValueError) as exc:
            raise DataError(f"Expected valid {name} arguments in the preprocessing record, but got {sorted(args)} "
                            f"({short_reason(exc)}).") from exc
    pm = spec.get("pixel_map") or {}
    steps.append(PixelMapd("image", pm.get("scale", 1.0), pm.get("offset", 0.0)))
    return Compose(steps)


def make_transforms(image_size: int, in_channels: int = 1, spatial_dims: int = 2,
                    spacing_mm: float | None = None) -> Compose:
    """Dictionary transforms → (C, S, S) or (C, S, S, S) float32 in [0, 1].

    2D: load → middle grey plane → channel first → [0, 1] → resize.
    3D: load volume + affine → RAS orientation → (spacing_mm: isotropic resampling) → [0, 1] → resize.
    """
    if spatial_dims == 3:
        steps = [LoadVolumed("image"),
                 Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
        if spacing_mm:
            steps.append(Spacingd("image", pixdim=(spacing_mm,) * 3, mode="bilinear"))
        steps += [ScaleIntensityd("image", minv=0.0, maxv=1.0),
                  Resized("image", spatial_size=(image_size,) * 3, mode="trilinear", anti_aliasing=True)]
    elif spatial_dims == 2:
        steps = [
            LoadMiddleSliced("image"),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            ScaleIntensityd("image", minv=0.0, maxv=1.0),
            Resized("image", spatial_size=(image_size, image_size), mode="bilinear", anti_aliasing=True),
        ]
    else:
        raise DataError(f"Expected spatial_dims 2 (images) or 3 (volumes), but got {spatial_dims!r}.")
    if in_channels > 1:
        steps.append(RepeatChanneld("image", repeats=in_channels))
    steps.append(EnsureTyped("image", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def make_dataset(records: list[dict], image_size: int, cache: bool = True, in_channels: int = 1,
                 spatial_dims: int = 2, cache_dir: str | Path | None = None,
                 spacing_mm: float | None = None, preprocessing: Mapping | None = None) -> Dataset:
    """A MONAI dataset over cohort records (preprocessing: an adopted model's own pipeline).

    cache_dir: PersistentDataset on disk, keyed by file content + transform settings (survives runs);
    else cache=True: CacheDataset (decode once, keep in memory); else a plain Dataset.
    """
    if preprocessing is not None:
        transform = bundle_transforms(preprocessing)
    else:
        transform = make_transforms(image_size, in_channels, spatial_dims, spacing_mm)
    if cache_dir is not None:
        from medunlearn.data.cache import keyed_records, record_hash

        settings: dict[str, Any] = {"image_size": image_size, "in_channels": in_channels,
                                    "spatial_dims": spatial_dims, "spacing_mm": spacing_mm}
        if preprocessing is not None:  # the adopted pipeline is part of the key
            settings = {"preprocessing": dict(preprocessing)}
        return PersistentDataset(keyed_records(records, settings, cache_dir), transform, cache_dir=cache_dir,
                                 hash_func=record_hash)
    if cache:
        return CacheDataset(records, transform, cache_rate=1.0, num_workers=0, progress=False)
    return Dataset(records, transform)


def _data_error(exc: BaseException) -> DataError | None:
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, DataError):
            return link
        link = link.__cause__ or link.__context__
    return None


def load_images(df: pd.DataFrame, class_names: list[str], image_size: int, progress: bool = False,
                in_channels: int = 1, batch_size: int = 64, spatial_dims: int = 2,
                cache_dir: str | Path | None = None, workers: int = 0,
                spacing_mm: float | None = None,
                preprocessing: Mapping | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every cohort row once → images (N, C, S, S) or (N, C, S, S, S) float32 in [0, 1], labels (N,).

    cache_dir: keep transformed items on disk so the next run skips decoding; workers: DataLoader workers.
    preprocessing: an adopted model's pipeline (meta["preprocessing"]); its pixels are not clamped (u is in
    [0, 1] on the adoption sample by construction, and clamping would change what the model sees).
    """
    records = cohort_records(df, class_names)
    if preprocessing is not None:
        in_channels = int(preprocessing.get("in_channels") or in_channels)
        size = preprocessing.get("spatial_size") or [image_size] * spatial_dims
    else:
        size = [image_size] * spatial_dims
    if not records:
        return torch.zeros(0, in_channels, *size), torch.zeros(0, dtype=torch.long)
    dataset = make_dataset(records, image_size, cache=False, in_channels=in_channels, spatial_dims=spatial_dims,
                           cache_dir=cache_dir, spacing_mm=spacing_mm, preprocessing=preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    images, labels = [], []
    with RunContext(show_progress=progress).progress("Decoding images", total=len(records)) as advance:
        try:
            for batch in loader:
                images.append(batch["image"].float())
                labels.append(torch.as_tensor(batch["label"], dtype=torch.long))
                advance(len(batch["label"]))
        except Exception as exc:
            err = _data_error(exc)
            if err is not None:
                raise err from exc
            if preprocessing is not None and isinstance(exc, RuntimeError):
                raise DataError("Expected every image to come out of the adopted pipeline at one size, but sizes "
                                "differ (the bundle has no Resized step).") from exc
            raise DataError(f"Expected every cohort image to load, but decoding failed "
                            f"({type(exc).__name__}).") from exc
    if preprocessing is not None:
        return torch.cat(images), torch.cat(labels)
    return torch.cat(images).clamp_(0.0, 1.0), torch.cat(labels)
