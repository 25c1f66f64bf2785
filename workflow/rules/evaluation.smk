# Metrics per model and split, their collection, and the report's figures.


rule evaluate:
    input:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        dsm="results/{aoi}/inputs/dsm.tif",
        split="results/{aoi}/split/split.tif",
    output:
        csv="results/{aoi}/metrics/per_model/{model}_seed{seed}.csv",
        samples="results/{aoi}/metrics/samples/{model}_seed{seed}.csv",
    log:
        "results/{aoi}/logs/evaluate/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/evaluate/{model}_seed{seed}.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    shell:
        "python -m aefheight evaluate --model {wildcards.model} --seed {wildcards.seed}"
        " --prediction {input.prediction} --dsm {input.dsm} --split {input.split}"
        " --out-csv {output.csv} --out-samples {output.samples} > {log} 2>&1"


rule collect_metrics:
    input:
        expand(
            "results/{{aoi}}/metrics/per_model/{model}_seed{seed}.csv",
            model=MODELS,
            seed=SEEDS,
        ),
    output:
        report(
            "results/{aoi}/metrics/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"aoi": "{aoi}", "table": "metrics per model and split"},
        ),
    log:
        "results/{aoi}/logs/collect_metrics.log",
    benchmark:
        "results/{aoi}/benchmarks/collect_metrics.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    shell:
        "python -m aefheight collect --aoi {wildcards.aoi} --out {output} {input} > {log} 2>&1"


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
    conda:
        "../../envs/figures.yaml"
    threads: 1
    shell:
        "python -m aefheight plot pred-vs-ref --samples {input.samples} --metrics {input.metrics}"
        " --model {wildcards.model} --out {output.png} > {log} 2>&1"


rule plot_loss_curves:
    input:
        expand("results/{{aoi}}/models/{model}/seed{{seed}}/history.csv", model=NETS),
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
    conda:
        "../../envs/figures.yaml"
    threads: 1
    shell:
        "python -m aefheight plot loss-curves --histories {input} --out {output.png} > {log} 2>&1"
