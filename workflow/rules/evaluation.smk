# Metrics per model and split (one job per shard for a sharded AOI, then merged), the
# height-shift analysis, tables, and the report's figures.


rule evaluate:
    input:
        unpack(landcover_input),
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
    output:
        metrics="results/{aoi}/metrics/per_model/{model}_seed{seed}.csv",
        samples="results/{aoi}/metrics/samples/{model}_seed{seed}.csv",
        by_height="results/{aoi}/metrics/by_height/{model}_seed{seed}.csv",
        by_class="results/{aoi}/metrics/by_landcover/{model}_seed{seed}.csv",
        seams="results/{aoi}/metrics/seams/{model}_seed{seed}.csv",
    log:
        "results/{aoi}/logs/evaluate/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/evaluate/{model}_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(UNSHARDED),
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    params:
        landcover=optional_flags(landcover_input),
    shell:
        "python -m aefheight evaluate --model {wildcards.model} --seed {wildcards.seed}"
        " --prediction {input.prediction} --dsm {input.dsm} --split {input.split}"
        " {params.landcover} --metrics {output.metrics} --samples {output.samples}"
        " --by-height {output.by_height} --by-class {output.by_class}"
        " --seams {output.seams} > {log} 2>&1"


rule evaluate_shard:
    input:
        unpack(landcover_input),
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
    output:
        partials="results/{aoi}/metrics/shards/{shard}/{model}_seed{seed}.npz",
    log:
        "results/{aoi}/logs/evaluate/{shard}/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/evaluate/{shard}/{model}_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(SHARDED),
    conda:
        "../../envs/evaluate_shard.yaml"
    threads: 1
    params:
        landcover=optional_flags(landcover_input),
        sharding=lambda w: section_json("sharding"),
    shell:
        "python -m aefheight evaluate-shard --model {wildcards.model} --seed {wildcards.seed}"
        " --shard {wildcards.shard} --sharding {params.sharding:q}"
        " --prediction {input.prediction} --dsm {input.dsm} --split {input.split}"
        " {params.landcover} --partials {output.partials} > {log} 2>&1"


rule merge_evaluation:
    input:
        partials=per_shard("results/{aoi}/metrics/shards/{shard}/{model}_seed{seed}.npz"),
    output:
        metrics="results/{aoi}/metrics/per_model/{model}_seed{seed}.csv",
        samples="results/{aoi}/metrics/samples/{model}_seed{seed}.csv",
        by_height="results/{aoi}/metrics/by_height/{model}_seed{seed}.csv",
        by_class="results/{aoi}/metrics/by_landcover/{model}_seed{seed}.csv",
        seams="results/{aoi}/metrics/seams/{model}_seed{seed}.csv",
    log:
        "results/{aoi}/logs/merge_evaluation/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/merge_evaluation/{model}_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(SHARDED),
    conda:
        "../../envs/merge_evaluation.yaml"
    threads: 1
    shell:
        "python -m aefheight merge-evaluation --model {wildcards.model} --seed {wildcards.seed}"
        " --partials {input.partials} --metrics {output.metrics} --samples {output.samples}"
        " --by-height {output.by_height} --by-class {output.by_class}"
        " --seams {output.seams} > {log} 2>&1"


rule collect_metrics:
    input:
        per_model=expand(
            "results/{{aoi}}/metrics/per_model/{model}_seed{seed}.csv",
            model=PREDICTIONS,
            seed=SEEDS,
        ),
    output:
        table=report(
            "results/{aoi}/metrics/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
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


rule height_shift:
    input:
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
    output:
        hist="results/{aoi}/shift/height_hist.csv",
        quantiles=report(
            "results/{aoi}/shift/height_quantiles.csv",
            caption="../report/height_quantiles.rst",
            category="Distribution shift",
            labels={"aoi": "{aoi}", "table": "reference height per split"},
        ),
        stats=report(
            "results/{aoi}/shift/shift_stats.csv",
            caption="../report/shift_stats.rst",
            category="Distribution shift",
            labels={"aoi": "{aoi}", "table": "train vs test shift statistics"},
        ),
    log:
        "results/{aoi}/logs/height_shift.log",
    benchmark:
        "results/{aoi}/benchmarks/height_shift.tsv"
    conda:
        "../../envs/height_shift.yaml"
    threads: 1
    shell:
        "python -m aefheight height-shift --dsm {input.dsm} --split {input.split}"
        " --embeddings {input.embeddings} --hist {output.hist} --quantiles {output.quantiles}"
        " --stats {output.stats} > {log} 2>&1"


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
        md=report(
            "results/{aoi}/tables/metrics.md",
            caption="../report/table_metrics.rst",
            category="Metrics",
            labels={"aoi": "{aoi}", "table": "paper table (Markdown)"},
        ),
        tex="results/{aoi}/tables/metrics.tex",
        comparisons=report(
            "results/{aoi}/tables/comparisons.csv",
            caption="../report/comparisons.rst",
            category="Metrics",
            labels={"aoi": "{aoi}", "table": "paired comparisons over seeds"},
        ),
        training=report(
            "results/{aoi}/tables/training.csv",
            caption="../report/training_table.rst",
            category="Training",
            labels={"aoi": "{aoi}", "table": "epochs actually run"},
        ),
        training_md="results/{aoi}/tables/training.md",
        seam_table=report(
            "results/{aoi}/tables/seams.csv",
            caption="../report/seams.rst",
            category="Predicted vs reference",
            labels={"aoi": "{aoi}", "table": "seam check per prediction"},
        ),
        crossover=report(
            "results/{aoi}/tables/crossover.csv",
            caption="../report/crossover.rst",
            category="Distribution shift",
            labels={"aoi": "{aoi}", "table": "over/under-estimation crossover height"},
        ),
        shift_md="results/{aoi}/tables/shift.md",
        shift_tex="results/{aoi}/tables/shift.tex",
        findings="results/{aoi}/tables/findings.rst",
        corrections=report(
            "results/{aoi}/tables/corrections.csv",
            caption="../report/corrections.rst",
            category="Bias correction",
            labels={"aoi": "{aoi}", "table": "fits of the bias corrections"},
        ),
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
        corrected=" ".join(f"{c}={m}" for c, (m, _) in CORRECTED.items()),
        max_epochs=config["training"]["max_epochs"],
    shell:
        "python -m aefheight tables --aoi {wildcards.aoi} --metrics {input.metrics}"
        " --quantiles {input.quantiles} --stats {input.stats} --areas {input.areas}"
        " --histories {input.histories} --by-height {input.by_height} --seams {input.seams}"
        " --fits {input.fits} --nets {params.nets} --baselines {params.baselines}"
        " --corrected {params.corrected} --max-epochs {params.max_epochs}"
        " --md {output.md} --tex {output.tex} --comparisons {output.comparisons}"
        " --training {output.training} --training-md {output.training_md}"
        " --seam-table {output.seam_table} --crossover {output.crossover}"
        " --shift-md {output.shift_md} --shift-tex {output.shift_tex}"
        " --findings {output.findings} --corrections {output.corrections} > {log} 2>&1"


rule report_front:
    input:
        # each AOI's findings, then its k-fold findings (split.folds >= 2)
        findings=[
            f
            for aoi in AOIS
            for f in [f"results/{aoi}/tables/findings.rst"]
            + ([f"results/{aoi}/tables/kfold_findings.rst"] if FOLD_AOIS else [])
        ],
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


rule plot_pred_vs_ref:
    input:
        samples="results/{aoi}/metrics/samples/{model}_seed{seed}.csv",
        metrics="results/{aoi}/metrics/per_model/{model}_seed{seed}.csv",
    output:
        png=report(
            "results/{aoi}/figures/pred_vs_ref_{model}_seed{seed}.png",
            caption="../report/pred_vs_ref.rst",
            category="Predicted vs reference",
            labels={"aoi": "{aoi}", "model": "{model}", "seed": "{seed}"},
        ),
        pdf="results/{aoi}/figures/pred_vs_ref_{model}_seed{seed}.pdf",
    log:
        "results/{aoi}/logs/plot/pred_vs_ref_{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/pred_vs_ref_{model}_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_pred_vs_ref.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-pred-vs-ref --samples {input.samples} --metrics {input.metrics}"
        " --model {wildcards.model} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule plot_residual_map:
    input:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        dsm="results/{aoi}/inputs/dsm.tif",
    output:
        png=report(
            "results/{aoi}/figures/residual_map_{model}_seed{seed}.png",
            caption="../report/residual_map.rst",
            category="Residual maps",
            labels={"aoi": "{aoi}", "model": "{model}", "seed": "{seed}"},
        ),
        pdf="results/{aoi}/figures/residual_map_{model}_seed{seed}.pdf",
    log:
        "results/{aoi}/logs/plot/residual_map_{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/residual_map_{model}_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_residual_map.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-residual-map --prediction {input.prediction} --dsm {input.dsm}"
        " --model {wildcards.model} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule plot_dh_hist:
    input:
        samples=expand(
            "results/{{aoi}}/metrics/samples/{model}_seed{{seed}}.csv", model=PREDICTIONS
        ),
    output:
        png=report(
            "results/{aoi}/figures/dh_hist_seed{seed}.png",
            caption="../report/dh_hist.rst",
            category="Error distributions",
            labels={"aoi": "{aoi}", "seed": "{seed}", "figure": "dh histograms"},
        ),
        pdf="results/{aoi}/figures/dh_hist_seed{seed}.pdf",
    log:
        "results/{aoi}/logs/plot/dh_hist_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/dh_hist_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_dh_hist.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-dh-hist --samples {input.samples} --png {output.png}"
        " --pdf {output.pdf} > {log} 2>&1"


rule plot_error_by_height:
    input:
        by_height=expand(
            "results/{{aoi}}/metrics/by_height/{model}_seed{{seed}}.csv", model=PREDICTIONS
        ),
    output:
        png=report(
            "results/{aoi}/figures/error_by_height_seed{seed}.png",
            caption="../report/error_by_height.rst",
            category="Distribution shift",
            labels={"aoi": "{aoi}", "seed": "{seed}", "figure": "error by height"},
        ),
        pdf="results/{aoi}/figures/error_by_height_seed{seed}.pdf",
    log:
        "results/{aoi}/logs/plot/error_by_height_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/error_by_height_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_error_by_height.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-error-by-height --by-height {input.by_height} --png {output.png}"
        " --pdf {output.pdf} > {log} 2>&1"


rule plot_height_shift:
    input:
        hist="results/{aoi}/shift/height_hist.csv",
        stats="results/{aoi}/shift/shift_stats.csv",
    output:
        png=report(
            "results/{aoi}/figures/height_shift.png",
            caption="../report/height_shift.rst",
            category="Distribution shift",
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


rule plot_loss_curves:
    input:
        histories=expand("results/{{aoi}}/models/{model}/seed{{seed}}/history.csv", model=NETS),
    output:
        png=report(
            "results/{aoi}/figures/loss_curves_seed{seed}.png",
            caption="../report/loss_curves.rst",
            category="Training",
            labels={"aoi": "{aoi}", "seed": "{seed}", "figure": "loss curves"},
        ),
        pdf="results/{aoi}/figures/loss_curves_seed{seed}.pdf",
    log:
        "results/{aoi}/logs/plot/loss_curves_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/plot/loss_curves_seed{seed}.tsv"
    wildcard_constraints:
        aoi=one_of(AOIS),
    conda:
        "../../envs/plot_loss_curves.yaml"
    threads: 1
    shell:
        "python -m aefheight plot-loss-curves --histories {input.histories} --png {output.png}"
        " --pdf {output.pdf} > {log} 2>&1"
