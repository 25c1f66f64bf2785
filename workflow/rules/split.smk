# The spatial split (aefheight.split): the configured split, and for split.folds >= 3 one split
# per k-fold strip. Fold i of AOI a is the split "a/kfold/fold<i>" (common.smk, FOLD_AOIS): the
# chain's own rules train, predict and score it under results/a/kfold/fold<i>/.


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


rule split_fold:
    input:
        index=aoi_input("results/{aoi}/patches/index.parquet"),
        grid=aoi_input("results/{aoi}/inputs/embeddings.tif"),
    output:
        gpkg="results/{aoi}/split/split.gpkg",
        raster="results/{aoi}/split/split.tif",
        areas="results/{aoi}/split/areas.csv",
    log:
        "results/{aoi}/logs/split.log",
    benchmark:
        "results/{aoi}/benchmarks/split.tsv"
    wildcard_constraints:
        aoi=one_of(list(FOLD_AOIS)),
    conda:
        "../../envs/split_fold.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("split"),
        fold=lambda w: FOLD_INDEX[w.aoi],
    shell:
        "python -m aefheight split --settings {params.settings:q} --fold {params.fold}"
        " --index {input.index} --grid {input.grid} --gpkg {output.gpkg}"
        " --raster {output.raster} --areas {output.areas} > {log} 2>&1"
