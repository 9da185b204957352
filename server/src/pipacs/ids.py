"""Public resource IDs computed the way Orthanc computes them."""

from __future__ import annotations

import hashlib

PATIENT, STUDY, SERIES, INSTANCE = 0, 1, 2, 3
LEVEL_NAMES = ("Patient", "Study", "Series", "Instance")
LEVEL_PLURALS = ("patients", "studies", "series", "instances")


def hash_id(text: str) -> str:
    """SHA-1 of the text, as five dash-separated groups of eight hex digits."""
    h = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def resource_ids(
    patient_id: str, study_uid: str, series_uid: str, sop_uid: str
) -> tuple[str, str, str, str]:
    """The patient, study, series and instance IDs of one instance."""
    chain = [patient_id.strip(), study_uid.strip(), series_uid.strip(), sop_uid.strip()]
    return (
        hash_id(chain[0]),
        hash_id("|".join(chain[:2])),
        hash_id("|".join(chain[:3])),
        hash_id("|".join(chain)),
    )
