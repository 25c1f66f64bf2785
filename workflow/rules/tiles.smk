# Tiling into the int8 patch store (aefheight.tiles); a sharded AOI is tiled one job per shard
# (tile_shard), then merge_patches indexes every shard's store.


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
