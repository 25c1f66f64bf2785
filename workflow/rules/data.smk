# Inputs of an AOI: two co-registered rasters on one 10 m grid.
#   embeddings.tif  int8 x 64 bands, nodata -128 (AEF codes, not de-quantized)
#   dsm.tif         float32 reference height in metres, with nodata
#   coarse_dem.tif  float32 coarse DEM in metres (GLO-30 on real AOIs), the no-learning baseline


rule synthesize:
    output:
        embeddings="results/{aoi}/inputs/embeddings.tif",
        dsm="results/{aoi}/inputs/dsm.tif",
        landcover="results/{aoi}/inputs/landcover.tif",
        coarse_dem="results/{aoi}/inputs/coarse_dem.tif",
    log:
        "results/{aoi}/logs/synthesize.log",
    benchmark:
        "results/{aoi}/benchmarks/synthesize.tsv"
    wildcard_constraints:
        aoi=one_of(SYNTHETIC_AOIS),
    conda:
        "../../envs/synthesize.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("aois", w.aoi, "synthetic"),
    shell:
        "python -m aefheight synthesize --settings {params.settings:q}"
        " --embeddings {output.embeddings} --dsm {output.dsm} --landcover {output.landcover}"
        " --coarse-dem {output.coarse_dem}"
        " > {log} 2>&1"
