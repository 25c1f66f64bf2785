# The study's product (aefheight.report): the paper's claims checked, the tables, the k-fold
# summary, the findings page and the figures. One job per figure kind draws every model and
# seed (aefheight.report.plots, one pattern: files in, a PNG for the report and a PDF for a
# paper out); the report embeds the summary PNGs (median seed per model, or every seed as
# points and bands).


rule collect_metrics:
    input:
        per_model=lambda w: expand(
            "results/{aoi}/metrics/per_model/{model}_seed{seed}.csv",
            aoi=w.aoi,
            model=PREDICTIONS,
            seed=SEEDS,
        )
        + ensemble_metrics(w),
    output:
        table=report(
            "results/{aoi}/metrics/metrics.csv",
            caption="../report/metrics.rst",
            category="1 Claims and tables",
            labels={"aoi": "{aoi}", "table": "metrics per model, split and seed (CSV)"},
        ),
    log:
        "results/{aoi}/logs/collect_metrics.log",
    benchmark:
        "results/{aoi}/benchmarks/collect_metrics.tsv"
    conda:
        "../../envs/collect_metrics.yaml"
    threads: 1
    shell:
        "python -m aefheight collect-metrics --aoi {wildcards.aoi} --per-model {input.per_model}"
        " --table {output.table} > {log} 2>&1"


rule tables:
    input:
        metrics="results/{aoi}/metrics/metrics.csv",
        quantiles="results/{aoi}/shift/height_quantiles.csv",
        stats="results/{aoi}/shift/shift_stats.csv",
        areas="results/{aoi}/split/areas.csv",
        histories=expand(
            "results/{{aoi}}/models/{model}/seed{seed}/history.csv", model=NETS, seed=SEEDS
        ),
        by_height=expand(
            "results/{{aoi}}/metrics/by_height/{model}_seed{seed}.csv",
            model=PREDICTIONS,
            seed=SEEDS,
        ),
        seams=expand(
            "results/{{aoi}}/metrics/seams/{model}_seed{seed}.csv", model=PREDICTIONS, seed=SEEDS
        ),
        fits=expand(
            "results/{{aoi}}/corrections/{model}_seed{seed}.csv", model=CORRECTED, seed=SEEDS
        ),
    output:
        claims=report(
            "results/{aoi}/tables/claims.csv",
            caption="../report/claims.rst",
            category="1 Claims and tables",
            labels={"aoi": "{aoi}", "table": "the paper's claims, checked"},
        ),
        paper_md="results/{aoi}/tables/paper.md",
        paper_tex="results/{aoi}/tables/paper.tex",
        md="results/{aoi}/tables/metrics.md",
        per_seed=report(
            "results/{aoi}/tables/per_seed.csv",
            caption="../report/per_seed.rst",
            category="1 Claims and tables",
            labels={"aoi": "{aoi}", "table": "every seed"},
        ),
        comparisons=report(
            "results/{aoi}/tables/comparisons.csv",
            caption="../report/comparisons.rst",
            category="2 Seeds and comparisons",
            labels={"aoi": "{aoi}", "table": "paired comparisons over seeds"},
        ),
        training=report(
            "results/{aoi}/tables/training.csv",
            caption="../report/training_table.rst",
            category="5 Training",
            labels={"aoi": "{aoi}", "table": "steps and epochs of every training"},
        ),
        training_md="results/{aoi}/tables/training.md",
        seam_table=report(
            "results/{aoi}/tables/seams.csv",
            caption="../report/seams.rst",
            category="4 Maps",
            labels={"aoi": "{aoi}", "table": "seam check per prediction"},
        ),
        crossover=report(
            "results/{aoi}/tables/crossover.csv",
            caption="../report/crossover.rst",
            category="3 Distribution shift",
            labels={"aoi": "{aoi}", "table": "over/under-estimation crossover height"},
        ),
        shift_md="results/{aoi}/tables/shift.md",
        shift_tex="results/{aoi}/tables/shift.tex",
        findings="results/{aoi}/tables/findings.rst",
        corrections="results/{aoi}/tables/corrections.csv",
    log:
        "results/{aoi}/logs/tables.log",
    benchmark:
        "results/{aoi}/benchmarks/tables.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/tables.yaml"
    threads: 1
    params:
        nets=" ".join(NETS),
        baselines=" ".join(RIDGES + DEMS),
        ridge_models=" ".join(RIDGES),
        corrected=" ".join(f"{c}={m}" for c, (m, _) in CORRECTED.items()),
        roles=lambda w: json.dumps(paper_roles(), sort_keys=True, separators=(",", ":")),
        synthetic=lambda w: int(w.aoi in SYNTHETIC_AOIS),
        max_epochs=config["training"]["max_epochs"],
    shell:
        "python -m aefheight tables --aoi {wildcards.aoi} --metrics {input.metrics}"
        " --quantiles {input.quantiles} --stats {input.stats} --areas {input.areas}"
        " --histories {input.histories} --by-height {input.by_height} --seams {input.seams}"
        " --fits {input.fits} --nets {params.nets} --baselines {params.baselines}"
        " --ridge-models {params.ridge_models} --corrected {params.corrected}"
        " --roles {params.roles:q} --synthetic {params.synthetic}"
        " --max-epochs {params.max_epochs} --claims {output.claims}"
        " --paper-md {output.paper_md} --paper-tex {output.paper_tex} --md {output.md}"
        " --per-seed {output.per_seed} --comparisons {output.comparisons}"
        " --training {output.training} --training-md {output.training_md}"
        " --seam-table {output.seam_table} --crossover {output.crossover}"
        " --shift-md {output.shift_md} --shift-tex {output.shift_tex}"
        " --findings {output.findings} --corrections {output.corrections} > {log} 2>&1"


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


rule report_front:
    input:
        # each AOI's findings and its intervals', then its k-fold findings (split.folds >= 2)
        findings=[
            f
            for aoi in AOIS
            for f in [f"results/{aoi}/tables/findings.rst"]
            + ([f"results/{aoi}/tables/interval_findings.rst"] if INTERVAL_METHODS else [])
            + ([f"results/{aoi}/tables/kfold_findings.rst"] if FOLD_AOIS else [])
        ]
        + [f"results/products/{pair}/findings.rst" for pair in PRODUCT_PAIRS],
        methods=os.path.normpath(
            os.path.join(str(workflow.current_basedir), "../report/workflow.rst")
        ),
    output:
        front=FRONT_PAGE,
    log:
        "results/logs/report_front.log",
    conda:
        "../../envs/report_front.yaml"
    threads: 1
    shell:
        "python -m aefheight report-front --findings {input.findings} --methods {input.methods}"
        " --front {output.front} > {log} 2>&1"


rule compare_products:
    input:
        metrics=lambda w: [f"results/{a}/metrics/metrics.csv" for a in (w.first, w.second)],
        splits=lambda w: [f"results/{a}/split/split.tif" for a in (w.first, w.second)],
    output:
        comparisons="results/products/{first}_vs_{second}/comparisons.csv",
        md=report(
            "results/products/{first}_vs_{second}/products.md",
            caption="../report/products.rst",
            category="1 Claims and tables",
            labels={"aoi": "{first} vs {second}", "table": "embedding products compared"},
        ),
        findings_rst="results/products/{first}_vs_{second}/findings.rst",
    log:
        "results/products/logs/{first}_vs_{second}.log",
    wildcard_constraints:
        first=one_of(AOIS),
        second=one_of(AOIS),
    conda:
        "../../envs/compare_products.yaml"
    threads: 1
    params:
        models=NETS + RIDGES,  # the models that read the embeddings (not the coarse DEM)
    shell:
        "python -m aefheight compare-products --names {wildcards.first} {wildcards.second}"
        " --models {params.models} --metrics {input.metrics} --splits {input.splits} --comparisons {output.comparisons}"
        " --md {output.md} --findings-rst {output.findings_rst} > {log} 2>&1"


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


rule plot_seeds:
    input:
        metrics="results/{aoi}/metrics/metrics.csv",
    output:
        png=report(
            "results/{aoi}/figures/seeds.png",
            caption="../report/seeds.rst",
            category="2 Seeds and comparisons",
            labels={"aoi": "{aoi}", "figure": "every seed, with intervals"},
        ),
        pdf="results/{aoi}/figures/seeds.pdf",
    log:
        "results/{aoi}/logs/plot/seeds.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/seeds.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_seeds.yaml"
    threads: 1
    params:
        pairs=" ".join(f"{a}={b}" for a, b in paper_pairs()),
    shell:
        "python -m aefheight plot-seeds --metrics {input.metrics} --pairs {params.pairs}"
        " --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule plot_error_by_height:
    input:
        by_height=expand(
            "results/{{aoi}}/metrics/by_height/{model}_seed{seed}.csv",
            model=PREDICTIONS,
            seed=SEEDS,
        ),
    output:
        png=report(
            "results/{aoi}/figures/error_by_height.png",
            caption="../report/error_by_height.rst",
            category="3 Distribution shift",
            labels={"aoi": "{aoi}", "figure": "error by height, every seed"},
        ),
        pdf="results/{aoi}/figures/error_by_height.pdf",
    log:
        "results/{aoi}/logs/plot/error_by_height.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/error_by_height.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_error_by_height.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-error-by-height --by-height {input.by_height}"
        " --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule plot_height_shift:
    input:
        hist="results/{aoi}/shift/height_hist.csv",
        stats="results/{aoi}/shift/shift_stats.csv",
    output:
        png=report(
            "results/{aoi}/figures/height_shift.png",
            caption="../report/height_shift.rst",
            category="3 Distribution shift",
            labels={"aoi": "{aoi}", "figure": "height distribution per split"},
        ),
        pdf="results/{aoi}/figures/height_shift.pdf",
    log:
        "results/{aoi}/logs/plot/height_shift.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/height_shift.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_height_shift.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-height-shift --hist {input.hist} --stats {input.stats}"
        " --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule plot_residual_maps:
    input:
        predictions=expand(
            "results/{{aoi}}/predictions/{model}_seed{seed}.tif", model=PREDICTIONS, seed=SEEDS
        ),
        metrics="results/{aoi}/metrics/metrics.csv",
        dsm="results/{aoi}/inputs/dsm.tif",
        split="results/{aoi}/split/split.tif",
    output:
        png=report(
            "results/{aoi}/figures/residual_maps.png",
            caption="../report/residual_map.rst",
            category="4 Maps",
            labels={"aoi": "{aoi}", "figure": "residual maps, median seed per model"},
        ),
        pdf="results/{aoi}/figures/residual_maps.pdf",
        all_seeds="results/{aoi}/figures/residual_maps_all_seeds.pdf",
    log:
        "results/{aoi}/logs/plot/residual_maps.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/residual_maps.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_residual_maps.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-residual-maps --predictions {input.predictions}"
        " --metrics {input.metrics} --dsm {input.dsm} --split {input.split}"
        " --png {output.png} --pdf {output.pdf} --all-seeds {output.all_seeds} > {log} 2>&1"


rule plot_pred_vs_ref:
    input:
        samples=expand(
            "results/{{aoi}}/metrics/samples/{model}_seed{seed}.csv", model=PREDICTIONS, seed=SEEDS
        ),
        metrics="results/{aoi}/metrics/metrics.csv",
    output:
        png=report(
            "results/{aoi}/figures/pred_vs_ref.png",
            caption="../report/pred_vs_ref.rst",
            category="4 Maps",
            labels={"aoi": "{aoi}", "figure": "predicted vs reference, median seed per model"},
        ),
        pdf="results/{aoi}/figures/pred_vs_ref.pdf",
        all_seeds="results/{aoi}/figures/pred_vs_ref_all_seeds.pdf",
        dh_png=report(
            "results/{aoi}/figures/dh.png",
            caption="../report/dh_hist.rst",
            category="3 Distribution shift",
            labels={"aoi": "{aoi}", "figure": "error distributions, median seed per model"},
        ),
        dh_pdf="results/{aoi}/figures/dh.pdf",
    log:
        "results/{aoi}/logs/plot/pred_vs_ref.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/pred_vs_ref.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_pred_vs_ref.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-pred-vs-ref --samples {input.samples}"
        " --metrics {input.metrics} --png {output.png} --pdf {output.pdf}"
        " --all-seeds {output.all_seeds} --dh-png {output.dh_png} --dh-pdf {output.dh_pdf}"
        " > {log} 2>&1"


rule plot_loss_curves:
    input:
        histories=expand(
            "results/{{aoi}}/models/{model}/seed{seed}/history.csv", model=NETS, seed=SEEDS
        ),
    output:
        png=report(
            "results/{aoi}/figures/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="5 Training",
            labels={"aoi": "{aoi}", "figure": "validation error over steps, every seed"},
        ),
        pdf="results/{aoi}/figures/loss_curves.pdf",
    log:
        "results/{aoi}/logs/plot/loss_curves.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/loss_curves.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_loss_curves.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-loss-curves --histories {input.histories}"
        " --png {output.png} --pdf {output.pdf} > {log} 2>&1"


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


rule interval_tables:
    input:
        coverages=interval_files("coverage/{model}_seed{seed}.csv"),
    output:
        table="results/{aoi}/tables/intervals.csv",
        summary_md=report(
            "results/{aoi}/tables/intervals.md",
            caption="../report/intervals_table.rst",
            category="3 Prediction intervals",
            labels={"aoi": "{aoi}", "table": "interval coverage and width"},
        ),
        findings="results/{aoi}/tables/interval_findings.rst",
    log:
        "results/{aoi}/logs/interval_tables.log",
    benchmark:
        "results/{aoi}/benchmarks/interval_tables.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/interval_tables.yaml"
    threads: 1
    shell:
        "python -m aefheight interval-tables --aoi {wildcards.aoi}"
        " --coverages {input.coverages} --table {output.table}"
        " --summary-md {output.summary_md} --findings {output.findings} > {log} 2>&1"


rule plot_intervals:
    input:
        unpack(aoa_input),
        coverages=interval_files("coverage/{model}_seed{seed}.csv"),
        intervals=lambda w: [
            f"results/{w.aoi}/intervals/{m}_seed{SEEDS[0]}_{MAPPED_METHOD}.tif" for m in MODELS
        ],
        split="results/{aoi}/split/split.tif",
    output:
        png=report(
            "results/{aoi}/figures/intervals.png",
            caption="../report/intervals.rst",
            category="3 Prediction intervals",
            labels={"aoi": "{aoi}", "figure": "coverage by height"},
        ),
        pdf="results/{aoi}/figures/intervals.pdf",
        width_png=report(
            "results/{aoi}/figures/interval_width.png",
            caption="../report/interval_width.rst",
            category="3 Prediction intervals",
            labels={"aoi": "{aoi}", "figure": "interval width map"},
        ),
        width_pdf="results/{aoi}/figures/interval_width.pdf",
    log:
        "results/{aoi}/logs/plot/intervals.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/intervals.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_intervals.yaml"
    threads: 1
    params:
        aoa=optional_flags(aoa_input),
    shell:
        "python -m aefheight plot-intervals --coverages {input.coverages}"
        " --intervals {input.intervals} --split {input.split} {params.aoa}"
        " --png {output.png} --pdf {output.pdf} --width-png {output.width_png}"
        " --width-pdf {output.width_pdf} > {log} 2>&1"
