"""predict: whole-AOI predictions (nets, Ridge, the coarse DEM) and their bias corrections."""

# Every prediction raster's nodata; here so that the stage's torch-free modules share it.
PRED_NODATA = -9999.0
