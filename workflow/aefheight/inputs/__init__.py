"""inputs: an AOI's co-registered rasters, synthetic (calibrated) or downloaded (sources/)."""
