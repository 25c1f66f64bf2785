# Inputs of an AOI: three co-registered rasters on one 10 m grid (aefheight.inputs).
#   embeddings.tif  int8 x 64 bands, nodata -128 (AEF codes, not de-quantized)
#   dsm.tif         float32 reference height in metres, nodata -9999
#   coarse_dem.tif  float32 coarse DEM in metres (GLO-30 on real AOIs), the no-learning baseline
# A synthetic AOI is made by `synthesize` (and a land-cover raster beside). A real AOI (source
# source_coop, gcs or earthengine) is downloaded and co-registered onto one grid in its UTM zone
# (aefheight.inputs.sources): the DSM's source, resolution and vertical datum are in its tags and
# dsm.json (shown in the report); the coarse DEM is on the reference's vertical datum where PROJ
# has the grids (coarse_dem.json says what was done). Downloads are cached under resources/ with
# a checksum each, so an interrupted run resumes. Credentials come from the environment only
# (see README, "Real data").


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


rule fetch_aef_index:
    output:
        index="resources/aef/index/{index_source}/aef_index.parquet",
        checksum="resources/aef/index/{index_source}/aef_index.parquet.sha256",
    log:
        "resources/aef/index/{index_source}/logs/fetch_aef_index.log",
    benchmark:
        "resources/aef/index/{index_source}/benchmarks/fetch_aef_index.tsv"
    wildcard_constraints:
        index_source="source_coop|gcs",
    conda:
        "../../envs/fetch_aef_index.yaml"
    threads: 1
    params:
        downloads=lambda w: section_json("downloads"),
    shell:
        "python -m aefheight fetch-aef-index --source {wildcards.index_source}"
        " --downloads {params.downloads:q} --index {output.index} --checksum {output.checksum}"
        " > {log} 2>&1"


rule fetch_embeddings:
    input:
        unpack(embeddings_inputs),
    output:
        embeddings="results/{aoi}/inputs/embeddings.tif",
        provenance="results/{aoi}/inputs/embeddings.json",
    log:
        "results/{aoi}/logs/fetch_embeddings.log",
    benchmark:
        "results/{aoi}/benchmarks/fetch_embeddings.tsv"
    wildcard_constraints:
        aoi=one_of(DOWNLOADED_AOIS),
    conda:
        "../../envs/fetch_embeddings.yaml"
    threads: 4
    params:
        settings=lambda w: section_json("aois", w.aoi),
        downloads=lambda w: section_json("downloads"),
        optional=optional_flags(embeddings_inputs),
        # TESSERA's tiles (geotessera's own layout) apart from AEF's block cache
        cache=lambda w: (
            "resources/tessera"
            if config["aois"][w.aoi]["source"] == "tessera"
            else "resources/aef/blocks"
        ),
    shell:
        "python -m aefheight fetch-embeddings --aoi {wildcards.aoi}"
        " --settings {params.settings:q} --downloads {params.downloads:q} {params.optional}"
        " --cache-dir {params.cache} --embeddings {output.embeddings}"
        " --provenance {output.provenance} --threads {threads} > {log} 2>&1"


rule fetch_dsm:
    input:
        unpack(dsm_inputs),
    output:
        dsm="results/{aoi}/inputs/dsm.tif",
        provenance=report(
            "results/{aoi}/inputs/dsm.json",
            category="9 Inputs",
            labels={"aoi": "{aoi}", "file": "reference DSM: source, resolution, datum"},
        ),
    log:
        "results/{aoi}/logs/fetch_dsm.log",
    benchmark:
        "results/{aoi}/benchmarks/fetch_dsm.tsv"
    wildcard_constraints:
        aoi=one_of(DOWNLOADED_AOIS),
    conda:
        "../../envs/fetch_dsm.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("aois", w.aoi),
        downloads=lambda w: section_json("downloads"),
        optional=optional_flags(dsm_inputs),
    shell:
        "python -m aefheight fetch-dsm --aoi {wildcards.aoi} --settings {params.settings:q}"
        " --downloads {params.downloads:q} {params.optional} --cache-dir resources/dsm"
        " --dsm {output.dsm} --provenance {output.provenance} > {log} 2>&1"


rule fetch_coarse_dem:
    input:
        unpack(aoi_file_inputs),
        reference="results/{aoi}/inputs/dsm.json",
    output:
        coarse_dem="results/{aoi}/inputs/coarse_dem.tif",
        provenance=report(
            "results/{aoi}/inputs/coarse_dem.json",
            category="9 Inputs",
            labels={"aoi": "{aoi}", "file": "coarse DEM (GLO-30): datum conversion"},
        ),
    log:
        "results/{aoi}/logs/fetch_coarse_dem.log",
    benchmark:
        "results/{aoi}/benchmarks/fetch_coarse_dem.tsv"
    wildcard_constraints:
        aoi=one_of(DOWNLOADED_AOIS),
    conda:
        "../../envs/fetch_coarse_dem.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("aois", w.aoi),
        downloads=lambda w: section_json("downloads"),
        optional=optional_flags(aoi_file_inputs),
    shell:
        "python -m aefheight fetch-coarse-dem --aoi {wildcards.aoi} --settings {params.settings:q}"
        " --downloads {params.downloads:q} --reference {input.reference} {params.optional}"
        " --cache-dir resources/dsm --coarse-dem {output.coarse_dem}"
        " --provenance {output.provenance} > {log} 2>&1"
