"""Real data for an AOI: AlphaEarth embeddings and a reference DSM, downloaded and co-registered.

The download rules (``workflow/rules/inputs.smk``) replace the synthesize rule when the config
names a real AOI (``aois.<name>.source`` is ``source_coop``, ``gcs`` or ``earthengine``). They
write the same two rasters the synthetic AOI has, on one 10 m grid in the AOI's UTM zone:

* ``embeddings.tif``: int8 x 64 bands, nodata -128 (AEF codes, not de-quantized);
* ``dsm.tif``: float32 height in metres, nodata -9999, with its source, native resolution and
  vertical datum in the raster's tags.

Modules, in the order the data flows:

* :mod:`.spec`: the settings read from the config (AOI, DSM, download/network settings);
* :mod:`.http`: whole-file downloads with resume, retries and checksums, and GDAL's
  ``/vsicurl/`` options for range reads;
* :mod:`.aoi`: AOI geometry (GeoJSON/GeoPackage polygon or bbox) -> UTM target grid;
* :mod:`.aef_index`: the AEF tile index (fetch once, record its checksum, select tiles);
* :mod:`.aef_download`: read only the windows the AOI needs, flip the bottom-up COGs, mosaic;
* :mod:`.dsm`: Copernicus GLO-30 tiles, IGN RGE ALTI archives, or a local raster;
* :mod:`.coregister`: reproject the DSM onto the embedding grid.
"""
