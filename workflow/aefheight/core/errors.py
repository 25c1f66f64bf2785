"""Named errors: each says what is wrong, where, and how to fix it.

The CLI turns any :class:`AefHeightError` into one line on stderr and exit code 2, so a
Snakemake log ends with the message a user can act on instead of a traceback wall.
"""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (GDAL's can run to many), or its class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AefHeightError(Exception):
    """Base class of every error a user can cause with input or config."""


class ConfigError(AefHeightError):
    """A config key is unknown, has the wrong type or an impossible value."""


class RasterError(AefHeightError):
    """A raster cannot be read or has the wrong bands, dtype or nodata."""


class GridMismatch(RasterError):
    """Two rasters that must share one grid (CRS, transform, shape) do not."""


class NoValidData(AefHeightError):
    """A raster or area holds no valid pixel (all nodata)."""


class AOIOutsideCoverage(AefHeightError):
    """The AOI lies (partly) outside the data a source covers."""


class TooFewPatches(AefHeightError):
    """Tiling or splitting leaves too few patches for the requested split."""


class DownloadError(AefHeightError):
    """A remote file could not be fetched after all retries."""


class YearNotAvailable(AOIOutsideCoverage):
    """The requested year is not in a source's data (e.g. not in the AEF index)."""


class MissingTile(DownloadError):
    """A tile or archive member the AOI needs does not exist at the source."""


class TooLarge(AefHeightError):
    """A run's outputs would exceed the configured size cap or the free disk."""


class SuspiciousValues(RasterError):
    """A raster declares no nodata, yet one fill-like value holds a large share of it."""
