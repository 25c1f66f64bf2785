# Scoring (aefheight.evaluate): metrics per model, seed and split (per shard for a sharded AOI,
# then merged), the height-shift analysis and the area of applicability.


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


rule evaluate_ensemble:
    input:
        unpack(landcover_input),
        prediction="results/{aoi}/predictions/{model}_ensemble.tif",
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
    output:
        metrics="results/{aoi}/metrics/per_model/{model}_ensemble.csv",
        samples="results/{aoi}/metrics/samples/{model}_ensemble.csv",
        by_height="results/{aoi}/metrics/by_height/{model}_ensemble.csv",
        by_class="results/{aoi}/metrics/by_landcover/{model}_ensemble.csv",
        seams="results/{aoi}/metrics/seams/{model}_ensemble.csv",
    log:
        "results/{aoi}/logs/evaluate/{model}_ensemble.log",
    benchmark:
        "results/{aoi}/benchmarks/evaluate/{model}_ensemble.tsv"
    wildcard_constraints:
        model=one_of(ENSEMBLED),
        aoi=one_of(AOIS),
    conda:
        "../../envs/evaluate_ensemble.yaml"
    threads: 1
    params:
        landcover=optional_flags(landcover_input),
    shell:
        "python -m aefheight evaluate --model {wildcards.model}_ensemble --seed -1"
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
        "python -m aefheight evaluate-shard --seed {wildcards.seed}"
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
            category="3 Distribution shift",
            labels={"aoi": "{aoi}", "table": "reference height per split"},
        ),
        stats=report(
            "results/{aoi}/shift/shift_stats.csv",
            caption="../report/shift_stats.rst",
            category="3 Distribution shift",
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


rule interval_coverage:
    input:
        unpack(aoa_input),
        intervals=expand(
            "results/{{aoi}}/intervals/{{model}}_seed{{seed}}_{method}.tif",
            method=INTERVAL_METHODS,
        ),
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
    output:
        coverage="results/{aoi}/intervals/coverage/{model}_seed{seed}.csv",
    log:
        "results/{aoi}/logs/interval_coverage/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/interval_coverage/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(MODELS),
    conda:
        "../../envs/interval_coverage.yaml"
    threads: 1
    params:
        aoa=optional_flags(aoa_input),
    shell:
        "python -m aefheight interval-coverage --model {wildcards.model}"
        " --seed {wildcards.seed} --intervals {input.intervals} --dsm {input.dsm}"
        " --split {input.split} {params.aoa} --coverage {output.coverage} > {log} 2>&1"
