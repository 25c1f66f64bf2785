# Tiling into the int8 patch store (one per shard for a sharded AOI), and the spatial split
# with its map.


rule tile:
    input:
        embeddings="results/{aoi}/inputs/embeddings.tif",
        dsm="results/{aoi}/inputs/dsm.tif",
        coarse_dem="results/{aoi}/inputs/coarse_dem.tif",
    output:
        index="results/{aoi}/patches/index.parquet",
        store_embeddings="results/{aoi}/patches/embeddings.npy",
        store_dsm="results/{aoi}/patches/dsm.npy",
        store_coarse_dem="results/{aoi}/patches/coarse_dem.npy",
    log:
        "results/{aoi}/logs/tile.log",
    benchmark:
        "results/{aoi}/benchmarks/tile.tsv"
    wildcard_constraints:
        aoi=one_of([a for a in AOIS if a not in SHARDS]),
    conda:
        "../../envs/tile.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("tiling"),
    shell:
        "python -m aefheight tile --settings {params.settings:q} --embeddings {input.embeddings}"
        " --dsm {input.dsm} --coarse-dem {input.coarse_dem} --index {output.index}"
        " --store-embeddings {output.store_embeddings} --store-dsm {output.store_dsm}"
        " --store-coarse-dem {output.store_coarse_dem} > {log} 2>&1"


rule tile_shard:
    input:
        embeddings="results/{aoi}/inputs/embeddings.tif",
        dsm="results/{aoi}/inputs/dsm.tif",
        coarse_dem="results/{aoi}/inputs/coarse_dem.tif",
    output:
        index="results/{aoi}/shards/{shard}/patches/index.parquet",
        store_embeddings="results/{aoi}/shards/{shard}/patches/embeddings.npy",
        store_dsm="results/{aoi}/shards/{shard}/patches/dsm.npy",
        store_coarse_dem="results/{aoi}/shards/{shard}/patches/coarse_dem.npy",
    log:
        "results/{aoi}/logs/tile/{shard}.log",
    benchmark:
        "results/{aoi}/benchmarks/tile/{shard}.tsv"
    wildcard_constraints:
        aoi=one_of(list(SHARDS)),
    conda:
        "../../envs/tile_shard.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("tiling"),
        sharding=lambda w: section_json("sharding"),
    shell:
        "python -m aefheight tile --shard {wildcards.shard} --settings {params.settings:q}"
        " --sharding {params.sharding:q} --embeddings {input.embeddings} --dsm {input.dsm}"
        " --coarse-dem {input.coarse_dem} --index {output.index}"
        " --store-embeddings {output.store_embeddings} --store-dsm {output.store_dsm}"
        " --store-coarse-dem {output.store_coarse_dem} > {log} 2>&1"


rule merge_patches:
    input:
        indexes=per_shard("results/{aoi}/shards/{shard}/patches/index.parquet"),
    output:
        index="results/{aoi}/patches/index.parquet",
    log:
        "results/{aoi}/logs/merge_patches.log",
    benchmark:
        "results/{aoi}/benchmarks/merge_patches.tsv"
    wildcard_constraints:
        aoi=one_of(list(SHARDS)),
    conda:
        "../../envs/merge_patches.yaml"
    threads: 1
    shell:
        "python -m aefheight merge-patches --indexes {input.indexes} --index {output.index}"
        " > {log} 2>&1"


rule split:
    input:
        index="results/{aoi}/patches/index.parquet",
        grid="results/{aoi}/inputs/embeddings.tif",
    output:
        gpkg="results/{aoi}/split/split.gpkg",
        raster="results/{aoi}/split/split.tif",
        areas=report(
            "results/{aoi}/split/areas.csv",
            caption="../report/split_areas.rst",
            category="6 Split",
            labels={"aoi": "{aoi}", "table": "realized split areas"},
        ),
    log:
        "results/{aoi}/logs/split.log",
    benchmark:
        "results/{aoi}/benchmarks/split.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/split.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("split"),
    shell:
        "python -m aefheight split --settings {params.settings:q} --index {input.index}"
        " --grid {input.grid} --gpkg {output.gpkg} --raster {output.raster}"
        " --areas {output.areas} > {log} 2>&1"


rule split_map:
    input:
        gpkg="results/{aoi}/split/split.gpkg",
        raster="results/{aoi}/split/split.tif",
        dsm="results/{aoi}/inputs/dsm.tif",
    output:
        png=report(
            "results/{aoi}/figures/split_map.png",
            caption="../report/split_map.rst",
            category="6 Split",
            labels={"aoi": "{aoi}", "figure": "split map"},
        ),
        pdf="results/{aoi}/figures/split_map.pdf",
    log:
        "results/{aoi}/logs/split_map.log",
    benchmark:
        "results/{aoi}/benchmarks/split_map.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/split_map.yaml"
    threads: 1
    shell:
        "python -m aefheight split-map --gpkg {input.gpkg} --raster {input.raster}"
        " --dsm {input.dsm} --png {output.png} --pdf {output.pdf} > {log} 2>&1"
