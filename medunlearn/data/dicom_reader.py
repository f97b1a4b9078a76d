"""A PydicomReader that serialises only the metadata it keeps.

MONAI's PydicomReader (prune_metadata=True, its default) turns the WHOLE dataset into DICOM JSON, pixel data
included (base64), then keeps five tags: orientation, position, pixel spacing and the two functional-group
sequences. On the synthetic 20k-image archive that was ~40 % of `forget`'s loading time. This reader serialises
just those five tags; its metadata dict, and so the affine and the MetaTensor, is the same (tests/data/
test_dicom_reader.py checks it against MONAI's on pydicom's multi-vendor test files).
"""
from __future__ import annotations

from monai.data import PydicomReader

# the tags PydicomReader._get_meta_dict keeps when it prunes (MONAI 1.x), as DICOM JSON keys
KEPT_TAGS = ("00200037", "00200032", "00280030", "52009229", "52009230")


class PrunedPydicomReader(PydicomReader):
    """PydicomReader whose pruned metadata is built from the kept tags alone."""

    def _get_meta_dict(self, img) -> dict:
        if not self.prune_metadata:
            return super()._get_meta_dict(img)
        out: dict = {}
        for key in KEPT_TAGS:
            tag = int(key, 16)
            if tag not in img:
                continue
            try:  # as Dataset.to_json_dict(suppress_invalid_tags=True): a tag that cannot be serialised is left out
                out[key] = img[tag].to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1024)
            except Exception:
                continue
        return out
