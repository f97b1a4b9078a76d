"""Option types shared by several commands (forget-rule options, output handling)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Device = Annotated[list[str] | None, typer.Option("--device", help="Forget images of this scanner model (ManufacturerModelName); repeat for OR.", rich_help_panel="Forget rule")]
Site = Annotated[list[str] | None, typer.Option("--site", help="Forget images of this institution; repeat for OR.", rich_help_panel="Forget rule")]
Manufacturer = Annotated[str | None, typer.Option("--manufacturer", help="Forget a vendor family (GE, Philips, Siemens, ...).", rich_help_panel="Forget rule")]
Patient = Annotated[list[str] | None, typer.Option("--patient", help="Forget a pseudonymised patient id; repeat for OR.", rich_help_panel="Forget rule")]
Before = Annotated[str | None, typer.Option("--study-date-before", help="Forget studies on or before YYYY-MM-DD.", rich_help_panel="Forget rule")]
After = Annotated[str | None, typer.Option("--study-date-after", help="Forget studies on or after YYYY-MM-DD.", rich_help_panel="Forget rule")]
Where = Annotated[list[str] | None, typer.Option("--where", help="KEY=VALUE, KEY~REGEX, KEY>NUM or KEY<NUM; repeat for AND.", rich_help_panel="Forget rule")]
Outliers = Annotated[str | None, typer.Option("--outliers", help="Anatomical outliers: 'auto', 'auto:3.0', 'measurement_mm>45' or 'measurement_mm:auto'.", rich_help_panel="Forget rule")]
Rules = Annotated[Path | None, typer.Option("--rules", help="YAML rule file (any:/all: groups); combined with the options above by AND.", rich_help_panel="Forget rule")]

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
Seed = Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed (split, training, unlearning).")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", envvar="MEDUNLEARN_CACHE", help="Keep decoded, transformed images here (keyed by file hash + transform) so later runs skip decoding.")]
TorchDevice = Annotated[str | None, typer.Option("--torch-device", envvar="MEDUNLEARN_TORCH_DEVICE", help="Compute device: cpu (default) or cuda (mixed precision on). Not the scanner --device.")]
CohortOpt = Annotated[Path, typer.Option("--cohort", help="Cohort table written by `medunlearn cohort index`.")]


def rule_from_options(device=None, site=None, manufacturer=None, patient=None, study_date_before=None,
                      study_date_after=None, where=None, outliers=None, rules=None):
    """Build one Rule (AND of every option given), or None when no option was given."""
    from medunlearn.selection.rules import AllOf, build_rule, load_rule_file

    given = any([device, site, manufacturer, patient, study_date_before, study_date_after, where, outliers])
    parts = []
    if given:
        parts.append(build_rule(device=device or None, site=site or None, manufacturer=manufacturer,
                                patient=patient or None, study_date_before=study_date_before,
                                study_date_after=study_date_after, where=tuple(where or ()), outliers=outliers))
    if rules is not None:
        parts.append(load_rule_file(rules))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def checked_torch_device(value: str | None) -> str | None:
    """--torch-device as given, once it names cpu or cuda[:N] (ConfigError, exit 2, otherwise)."""
    if value is None:
        return None
    import re

    from medunlearn.errors import ConfigError

    text = value.strip()
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", text):
        raise ConfigError(f"Expected --torch-device cpu, cuda or cuda:N, but got {value!r}.")
    return text
