# Whole-AOI prediction (aefheight.predict): one job per model and seed (per shard for a sharded
# AOI, then assembled), the coarse-DEM baseline and the bias corrections.


rule predict:
    input:
        unpack(coarse_dem_input),
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
    output:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS + RIDGES),
        aoi=one_of(UNSHARDED),
    conda:
        "../../envs/predict.yaml"
    threads: 2
    params:
        settings=lambda w: section_json("prediction"),
        optional=optional_flags(coarse_dem_input),
    shell:
        "python -m aefheight predict --settings {params.settings:q} --model {wildcards.model}"
        " --seed {wildcards.seed} --embeddings {input.embeddings} {params.optional}"
        " --checkpoint {input.checkpoint} --prediction {output.prediction} --threads {threads}"
        " > {log} 2>&1"


rule predict_shard:
    input:
        unpack(coarse_dem_input),
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
    output:
        prediction="results/{aoi}/shards/{shard}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{shard}/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{shard}/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS + RIDGES),
        aoi=one_of(SHARDED),
    conda:
        "../../envs/predict_shard.yaml"
    threads: 2
    params:
        settings=lambda w: section_json("prediction"),
        sharding=lambda w: section_json("sharding"),
        optional=optional_flags(coarse_dem_input),
    shell:
        "python -m aefheight predict --settings {params.settings:q}"
        " --sharding {params.sharding:q} --shard {wildcards.shard} --model {wildcards.model}"
        " --seed {wildcards.seed} --embeddings {input.embeddings} {params.optional}"
        " --checkpoint {input.checkpoint} --prediction {output.prediction} --threads {threads}"
        " > {log} 2>&1"


rule assemble_prediction:
    input:
        shards=per_shard("results/{aoi}/shards/{shard}/predictions/{model}_seed{seed}.tif"),
    output:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/assemble_prediction/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/assemble_prediction/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS + RIDGES),
        aoi=one_of(SHARDED),
    conda:
        "../../envs/assemble_prediction.yaml"
    threads: 2
    shell:
        "python -m aefheight assemble-prediction --shards {input.shards}"
        " --prediction {output.prediction} --threads {threads} > {log} 2>&1"


rule predict_coarse_dem:
    input:
        coarse_dem=aoi_input("results/{aoi}/inputs/coarse_dem.tif"),
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
    output:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(DEMS),
    conda:
        "../../envs/predict_coarse_dem.yaml"
    threads: 1
    shell:
        "python -m aefheight predict-coarse-dem --model {wildcards.model} --seed {wildcards.seed}"
        " --coarse-dem {input.coarse_dem} --embeddings {input.embeddings}"
        " --prediction {output.prediction} > {log} 2>&1"


rule correct:
    input:
        unpack(correction_inputs),
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        split="results/{aoi}/split/split.tif",
    output:
        corrected="results/{aoi}/predictions/{model}_{method}_seed{seed}.tif",
        fit="results/{aoi}/corrections/{model}_{method}_seed{seed}.csv",
    log:
        "results/{aoi}/logs/correct/{model}_{method}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/correct/{model}_{method}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(sorted({m for m, _ in CORRECTED.values()})),
    conda:
        "../../envs/correct.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("correction"),
        optional=optional_flags(correction_inputs),
    shell:
        "python -m aefheight correct --model {wildcards.model} --method {wildcards.method}"
        " --seed {wildcards.seed} --settings {params.settings:q} {params.optional}"
        " --prediction {input.prediction} --split {input.split}"
        " --corrected {output.corrected} --fit {output.fit} > {log} 2>&1"


rule predict_interval:
    input:
        prediction="results/{aoi}/predictions/{model}_seed{seed}.tif",
        dsm=aoi_input("results/{aoi}/inputs/dsm.tif"),
        split="results/{aoi}/split/split.tif",
    output:
        intervals=expand(
            "results/{{aoi}}/intervals/{{model}}_seed{{seed}}_{method}.tif",
            method=INTERVAL_METHODS,
        ),
        calibrations=expand(
            "results/{{aoi}}/intervals/calibration/{{model}}_seed{{seed}}_{method}.csv",
            method=INTERVAL_METHODS,
        ),
    log:
        "results/{aoi}/logs/predict_interval/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict_interval/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(MODELS),
    conda:
        "../../envs/predict_interval.yaml"
    threads: 1
    params:
        settings=lambda w: section_json("intervals"),
        methods=" ".join(INTERVAL_METHODS),
    shell:
        "python -m aefheight predict-interval --settings {params.settings:q}"
        " --model {wildcards.model} --seed {wildcards.seed} --prediction {input.prediction}"
        " --dsm {input.dsm} --split {input.split} --methods {params.methods}"
        " --intervals {output.intervals} --calibrations {output.calibrations} > {log} 2>&1"


rule ensemble:
    input:
        predictions=expand("results/{{aoi}}/predictions/{{model}}_seed{seed}.tif", seed=SEEDS),
    output:
        prediction="results/{aoi}/predictions/{model}_ensemble.tif",
    log:
        "results/{aoi}/logs/ensemble/{model}.log",
    benchmark:
        "results/{aoi}/benchmarks/ensemble/{model}.tsv"
    wildcard_constraints:
        model=one_of(ENSEMBLED),
        aoi=one_of(AOIS),
    conda:
        "../../envs/ensemble.yaml"
    threads: 1
    shell:
        "python -m aefheight ensemble --model {wildcards.model}"
        " --predictions {input.predictions} --prediction {output.prediction} > {log} 2>&1"
