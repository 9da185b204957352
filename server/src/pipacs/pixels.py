"""Which transfer syntaxes this machine decodes, through pydicom's pixel-data plugins.

pydicom decodes native (little/big endian, deflated) and RLE data by itself; the compressed
syntaxes need a plugin: pylibjpeg with pylibjpeg-libjpeg (JPEG, JPEG-LS), pylibjpeg-openjpeg
(JPEG 2000, HTJ2K) and pylibjpeg-rle, pyjpegls (JPEG-LS), Pillow (JPEG baseline/extended and
JPEG 2000, when built with them) or GDCM's python3-gdcm (what 32-bit Raspberry Pi OS gets:
PyPI has no armv7l wheels of the others). A syntax without a plugin is refused by name, with
what would decode it.
"""

from __future__ import annotations

from pydicom.uid import UID

# The syntaxes Orthanc 1.10.1 decodes (with its GDCM plugin for JPEG 2000), in README order.
ORTHANC_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
)


# pydicom's GDCM and Pillow plugins decode 8-bit JPEG Extended only; pylibjpeg does 12 bits.
TWELVE_BIT_JPEG = "1.2.840.10008.1.2.4.51"
TWELVE_BIT_NEEDS = "pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1 (GDCM and Pillow decode 8 bits)"


def missing_decoder(syntax: str, bits_stored: int = 8) -> str | None:
    """None when pydicom can decode this transfer syntax here, else why not (for the
    client: the syntax's name and UID, and what to install)."""
    from pydicom.pixels import get_decoder

    ts = UID(syntax)
    label = f"{ts.name} ({ts})" if ts.name != str(ts) else f"transfer syntax {ts}"
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"pipacs does not decode {label}: no decoder exists for it"
    if str(ts) == TWELVE_BIT_JPEG and bits_stored > 8 and decoder.is_available:
        if "pylibjpeg" in decoder.available_plugins:
            return None
        return f"this server has no decoder for {bits_stored}-bit {label}: it needs " \
            + TWELVE_BIT_NEEDS
    if decoder.is_available:
        return None
    needs = "; or ".join(decoder.missing_dependencies) or "a pixel-data plugin of pydicom"
    return f"this server has no decoder for {label}: it needs {needs}"


def summary() -> str:
    """One log line: the syntaxes Orthanc decodes that this machine cannot (at start)."""
    missing = [UID(ts).name for ts in ORTHANC_SYNTAXES if missing_decoder(ts, 8)]
    if missing_decoder(TWELVE_BIT_JPEG, 12):
        missing.append("12-bit JPEG Extended")
    if not missing:
        return f"images: every transfer syntax Orthanc decodes ({len(ORTHANC_SYNTAXES)})"
    return ("images: no decoder here for " + ", ".join(missing)
            + " (415 for those; see pipacs/pixels.py)")
