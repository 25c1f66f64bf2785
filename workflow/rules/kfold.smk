# Spatial k-fold cross-validation and the area of applicability (split.folds >= 2).
# Fold i of AOI a is the split "a/kfold/fold<i>" (common.smk, FOLD_AOIS): split_fold writes its
# split, and the chain's own rules (train_net, train_ridge, predict, evaluate, collect_metrics,
# height_shift) train, predict and score it under results/a/kfold/fold<i>/ as independent jobs.


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


rule aoa:
    input:
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
        split="results/{aoi}/split/split.tif",
    output:
        aoa_tif="results/{aoi}/aoa/aoa.tif",
        aoa_csv="results/{aoi}/aoa/aoa.csv",
    log:
        "results/{aoi}/logs/aoa.log",
    benchmark:
        "results/{aoi}/benchmarks/aoa.tsv"
    conda:
        "../../envs/aoa.yaml"
    threads: 2
    params:
        settings=lambda w: section_json("aoa"),
        split_settings=lambda w: section_json("split"),
    shell:
        "python -m aefheight aoa --settings {params.settings:q}"
        " --split-settings {params.split_settings:q} --embeddings {input.embeddings}"
        " --split {input.split} --aoa-tif {output.aoa_tif} --aoa-csv {output.aoa_csv}"
        " --threads {threads} > {log} 2>&1"


rule aoa_metrics:
    input:
        predictions=expand(
            "results/{{aoi}}/predictions/{model}_seed{seed}.tif", model=PREDICTIONS, seed=SEEDS
        ),
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
        aoa_tif="results/{aoi}/aoa/aoa.tif",
    output:
        metrics="results/{aoi}/aoa/metrics.csv",
    log:
        "results/{aoi}/logs/aoa_metrics.log",
    benchmark:
        "results/{aoi}/benchmarks/aoa_metrics.tsv"
    conda:
        "../../envs/aoa_metrics.yaml"
    threads: 1
    shell:
        "python -m aefheight aoa-metrics --predictions {input.predictions} --dsm {input.dsm}"
        " --split {input.split} --aoa-tif {input.aoa_tif} --metrics {output.metrics}"
        " > {log} 2>&1"


rule kfold:
    input:
        metrics="results/{aoi}/metrics/metrics.csv",
        aoa="results/{aoi}/aoa/aoa.csv",
        aoa_metrics="results/{aoi}/aoa/metrics.csv",
        fold_metrics=lambda w: fold_outputs(w.aoi, "results/{aoi}/metrics/metrics.csv"),
        fold_quantiles=lambda w: fold_outputs(w.aoi, "results/{aoi}/shift/height_quantiles.csv"),
        fold_stats=lambda w: fold_outputs(w.aoi, "results/{aoi}/shift/shift_stats.csv"),
        fold_aoa=lambda w: fold_outputs(w.aoi, "results/{aoi}/aoa/aoa.csv"),
        fold_aoa_metrics=lambda w: fold_outputs(w.aoi, "results/{aoi}/aoa/metrics.csv"),
        # the nets' histories, fold by fold (the same number per fold: best epochs per fold)
        fold_histories=lambda w: [
            h
            for f in fold_outputs(w.aoi, "results/{aoi}")
            for h in expand(
                f"{f}/models/{{model}}/seed{{seed}}/history.csv", model=NETS, seed=SEEDS
            )
        ],
    output:
        table=report(
            "results/{aoi}/tables/kfold.csv",
            caption="../report/kfold_table.rst",
            category="7 Spatial k-fold",
            labels={"aoi": "{aoi}", "table": "test metrics per fold, model and seed"},
        ),
        comparisons=report(
            "results/{aoi}/tables/kfold_comparisons.csv",
            caption="../report/kfold_comparisons.rst",
            category="7 Spatial k-fold",
            labels={"aoi": "{aoi}", "table": "k-fold vs single split, paired comparisons"},
        ),
        shift_response="results/{aoi}/tables/kfold_shift_response.csv",
        aoa_table=report(
            "results/{aoi}/tables/aoa.csv",
            caption="../report/aoa_table.rst",
            category="8 Area of applicability",
            labels={"aoi": "{aoi}", "table": "error inside vs outside the AOA"},
        ),
        md="results/{aoi}/tables/kfold.md",
        findings="results/{aoi}/tables/kfold_findings.rst",
    log:
        "results/{aoi}/logs/kfold.log",
    benchmark:
        "results/{aoi}/benchmarks/kfold.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/kfold.yaml"
    threads: 1
    params:
        nets=" ".join(NETS),
        baselines=" ".join(RIDGES + DEMS),
    shell:
        "python -m aefheight kfold --aoi {wildcards.aoi} --nets {params.nets}"
        " --baselines {params.baselines} --metrics {input.metrics} --aoa {input.aoa}"
        " --aoa-metrics {input.aoa_metrics} --fold-metrics {input.fold_metrics}"
        " --fold-quantiles {input.fold_quantiles} --fold-stats {input.fold_stats}"
        " --fold-aoa {input.fold_aoa} --fold-aoa-metrics {input.fold_aoa_metrics}"
        " --fold-histories {input.fold_histories}"
        " --table {output.table} --comparisons {output.comparisons}"
        " --shift-response {output.shift_response} --aoa-table {output.aoa_table}"
        " --md {output.md} --findings {output.findings} > {log} 2>&1"


rule plot_kfold:
    input:
        table="results/{aoi}/tables/kfold.csv",
        quantiles=lambda w: fold_outputs(w.aoi, "results/{aoi}/shift/height_quantiles.csv"),
    output:
        png=report(
            "results/{aoi}/figures/kfold.png",
            caption="../report/kfold.rst",
            category="7 Spatial k-fold",
            labels={"aoi": "{aoi}", "figure": "heights and errors per fold"},
        ),
        pdf="results/{aoi}/figures/kfold.pdf",
    log:
        "results/{aoi}/logs/plot/kfold.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/kfold.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_kfold.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-kfold --table {input.table} --quantiles {input.quantiles}"
        " --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule plot_aoa:
    input:
        aoa_tifs=lambda w: [
            f"results/{w.aoi}/aoa/aoa.tif",
            *fold_outputs(w.aoi, "results/{aoi}/aoa/aoa.tif"),
        ],
        splits=lambda w: [
            f"results/{w.aoi}/split/split.tif",
            *fold_outputs(w.aoi, "results/{aoi}/split/split.tif"),
        ],
    output:
        png=report(
            "results/{aoi}/figures/aoa_map.png",
            caption="../report/aoa_map.rst",
            category="8 Area of applicability",
            labels={"aoi": "{aoi}", "figure": "AOA map per split"},
        ),
        pdf="results/{aoi}/figures/aoa_map.pdf",
    log:
        "results/{aoi}/logs/plot/aoa_map.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/aoa_map.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_aoa.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-aoa --aoa-tifs {input.aoa_tifs} --splits {input.splits}"
        " --png {output.png} --pdf {output.pdf} > {log} 2>&1"
