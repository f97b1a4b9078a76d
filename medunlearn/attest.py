"""Attestation: bind a run's verdict to the weights it judges, so a PASS cannot be faked by editing a file.

`forget` and `merge` seal their run folder: metrics.json gets `model_sha256` (the weights' sha256) and an
`attestation`, an HMAC-SHA256 over the canonical JSON of {meta.json, metrics["acceptance"], the weights'
sha256}. `report` and `export-bundle` call `verify_run`, which recomputes the weights' hash and the HMAC and
refuses a mismatch, an unsigned PASS, and a PASS of a run whose meta.json says `accepted: false`.

Why an HMAC and not recomputing the checks: recomputing needs the cohort, the images, the base and the
reference and minutes of evaluation; governance must be able to check a report with none of them. The key is
derived (PBKDF2, its own context string) from the site secret that already pseudonymises the cohort
($MEDUNLEARN_SALT_FILE names a file holding it, else $MEDUNLEARN_SALT). Without one, runs are signed with the
public demo key: such a signature is marked "public key: demo only", since anyone can forge it, and a PASS of a
non-synthetic run signed with it is refused.

Threat model: someone who can write the run folder but does not hold the site secret cannot raise `accepted`
or `met`, edit a check, or carry a verdict over to other weights without `report` and `export-bundle`
refusing the run. Whoever holds the secret (or anyone, under the public demo key) can sign anything: the
signature proves which key sealed the record, not that the checks were computed honestly.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medunlearn.errors import DataError
from medunlearn.fileio import json_default

SALT_FILE_ENV = "MEDUNLEARN_SALT_FILE"
ALG = "HMAC-SHA256"
PUBLIC = "public key: demo only"
SITE = "site secret"
_CONTEXT = b"medunlearn-attestation-v1"


def canonical(obj: Any) -> bytes:
    """One byte string per JSON value: normalised through a JSON round trip, keys sorted, no spaces."""
    plain = json.loads(json.dumps(obj, default=json_default))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def site_secret() -> tuple[str, str]:
    """(secret, kind): the file named by $MEDUNLEARN_SALT_FILE, else $MEDUNLEARN_SALT (kind SITE), else the
    public default salt (kind PUBLIC). Every source must hold at least deid.MIN_SALT characters."""
    from medunlearn.data.deid import DEFAULT_SALT, SALT_ENV, check_salt, read_salt_file

    if os.environ.get(SALT_FILE_ENV):
        return read_salt_file(os.environ[SALT_FILE_ENV]), SITE
    if os.environ.get(SALT_ENV):
        return check_salt(os.environ[SALT_ENV], f"${SALT_ENV}"), SITE
    return DEFAULT_SALT, PUBLIC


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> tuple[bytes, str]:
    """(HMAC key, key id). Slow derivation, so neither the key nor its id lets anyone test salt guesses fast."""
    key = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), _CONTEXT, 100_000)
    return key, hashlib.sha256(_CONTEXT + key).hexdigest()[:16]


def _payload(meta: Mapping[str, Any], acceptance: Any, sha: str) -> bytes:
    return canonical({"meta": meta, "acceptance": acceptance, "model_sha256": sha})


def sign(meta: Mapping[str, Any], acceptance: Any, sha: str) -> dict[str, Any]:
    """The attestation record for a run's meta.json, acceptance record and weights' sha256."""
    secret, kind = site_secret()
    key, key_id = _key(secret)
    mac = hmac.new(key, _payload(meta, acceptance, sha), hashlib.sha256).hexdigest()
    return {"alg": ALG, "key": kind, "key_id": key_id, "model_sha256": sha, "mac": mac}


def seal(run_dir: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Add `model_sha256` and `attestation` to `metrics` (in place) for the checkpoint already saved in
    `run_dir` (a staging folder); write metrics.json after this. Returns `metrics`."""
    from medunlearn.fileio import read_json
    from medunlearn.models.checkpoint import model_sha256

    sha = model_sha256(run_dir)
    metrics["model_sha256"] = sha
    metrics.pop("attestation", None)
    metrics["attestation"] = sign(read_json(Path(run_dir) / "meta.json"), metrics.get("acceptance"), sha)
    return metrics


def _claims_verdict(meta: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> bool:
    return any(k in meta for k in ("accepted", "acceptance")) or bool(metrics and "acceptance" in metrics)


def _met(metrics: Mapping[str, Any] | None) -> bool:
    acc = metrics.get("acceptance") if metrics else None
    return isinstance(acc, Mapping) and acc.get("met") is True


def verify_run(run_dir: str | Path) -> dict[str, Any]:
    """Check a run's verdict against its weights and signature. Returns {"state", "key", "key_id",
    "model_sha256"}: state "verified", "unsigned" (an older run whose verdict is not PASS) or "no verdict".

    Raises DataError when: metrics.json was computed for other weights; the signature does not match (an edited
    meta.json or acceptance record, or another site's key); a PASS is unsigned, signed with the public demo key on
    a non-synthetic run, or belongs to a run whose meta.json says accepted: false."""
    from medunlearn.fileio import read_json
    from medunlearn.models.checkpoint import model_sha256

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "meta.json")
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else None
    if not isinstance(meta, dict) or (metrics is not None and not isinstance(metrics, dict)):
        raise DataError(f"Expected meta.json and metrics.json in {run_dir.name} to hold JSON objects, but they do not.")
    sha = model_sha256(run_dir)
    recorded = metrics.get("model_sha256") if metrics else None
    if recorded is not None and recorded != sha:
        raise DataError(f"Expected metrics.json to describe the weights in {run_dir.name} (sha256 {sha[:12]}), but "
                        f"it was computed for {str(recorded)[:12]}; a verdict cannot be carried over to other weights.")
    if not _claims_verdict(meta, metrics):
        return {"state": "no verdict", "key": None, "key_id": None, "model_sha256": sha}
    att = metrics.get("attestation") if metrics else None
    passed = _met(metrics) or meta.get("accepted") is True
    if not isinstance(att, Mapping):
        if passed:
            raise DataError(f"Expected the accepted verdict of {run_dir.name} to be signed (metrics.json "
                            "'attestation'), but it is not; re-run forget/merge with this medunlearn version.")
        return {"state": "unsigned", "key": None, "key_id": None, "model_sha256": sha}
    assert metrics is not None  # the attestation was read from it
    secret, kind = site_secret()
    if att.get("key") == PUBLIC:
        from medunlearn.data.deid import DEFAULT_SALT

        secret, kind = DEFAULT_SALT, PUBLIC
    key, key_id = _key(secret)
    if att.get("key_id") != key_id:
        raise DataError(f"Expected {run_dir.name}'s verdict to be signed with this site's key (id {key_id}), but it "
                        f"was signed with key {str(att.get('key_id'))[:16]}; set $MEDUNLEARN_SALT_FILE (or "
                        "$MEDUNLEARN_SALT) to the site secret that sealed it.")
    mac = hmac.new(key, _payload(meta, metrics.get("acceptance"), sha), hashlib.sha256).hexdigest()
    if att.get("model_sha256") != sha or not hmac.compare_digest(str(att.get("mac")), mac):
        raise DataError(f"Expected the signed verdict of {run_dir.name} to match its meta.json, acceptance record "
                        "and weights, but the signature does not: a file was edited or copied in after the run.")
    if _met(metrics) and meta.get("accepted") is False:
        raise DataError(f"Expected an accepted run, but {run_dir.name}'s meta.json says accepted: false.")
    if passed and kind == PUBLIC and not meta.get("synthetic"):
        raise DataError(f"Expected the PASS of non-synthetic run {run_dir.name} to be signed with the site secret, "
                        f"but it was signed with the public demo key, which anyone can forge.")
    return {"state": "verified", "key": kind, "key_id": key_id, "model_sha256": sha}


def check_export(ckpt_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """What `export-bundle` checks before it writes: the bundle folder is apart from the checkpoint (neither
    holds the other), and the checkpoint's verdict verifies against its weights (`verify_run`)."""
    from medunlearn.fileio import check_apart, require_dir

    check_apart([out_dir], [ckpt_dir])
    return verify_run(require_dir(ckpt_dir, "a checkpoint"))
