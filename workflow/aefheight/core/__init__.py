"""core: what every stage shares: errors, atomic files, rasters and grids, AEF codes, the schema."""
