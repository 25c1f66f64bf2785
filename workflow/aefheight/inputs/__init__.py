"""inputs: an AOI's co-registered rasters, synthetic (calibrated, frozen) or downloaded (sources/)."""
