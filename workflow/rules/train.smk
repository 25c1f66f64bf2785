# Training (aefheight.train): the nets and the Ridge baselines, one job per model and seed.


rule train_net:
    input:
        store_embeddings=store_input("embeddings"),
        store_dsm=store_input("dsm"),
        store_coarse_dem=store_input("coarse_dem"),
        split_gpkg="results/{aoi}/split/split.gpkg",
        split_tif="results/{aoi}/split/split.tif",
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
    output:
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
        history="results/{aoi}/models/{model}/seed{seed}/history.csv",
    log:
        "results/{aoi}/logs/train/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/train/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS),
    # the trainings are the study's critical path: start them before the baselines' jobs
    priority: 10
    conda:
        "../../envs/train_net.yaml"
    threads: lambda w: training_threads()
    resources:
        # one GPU (common.smk, training_gpus): `--gpus=1` on SLURM (profiles/slurm), and a
        # slot of the local `gpu` resource (workflow/profiles/default: gpu=1), so GPU trainings on a
        # workstation run one at a time; none on a CPU-only machine, so they run side by side
        gpu=lambda w: training_gpus(),
    params:
        model=lambda w: section_json("models", w.model),
        settings=lambda w: section_json("training"),
        # saved after every epoch so that a rerun resumes; removed once the outputs exist
        resume="results/{aoi}/models/{model}/seed{seed}/resume.pt",
    shell:
        "python -m aefheight train-net --model {wildcards.model} --seed {wildcards.seed}"
        " --model-settings {params.model:q} --settings {params.settings:q}"
        " --store-embeddings {input.store_embeddings} --store-dsm {input.store_dsm}"
        " --store-coarse-dem {input.store_coarse_dem}"
        " --split-gpkg {input.split_gpkg} --split-tif {input.split_tif}"
        " --embeddings {input.embeddings} --checkpoint {output.checkpoint}"
        " --history {output.history} --resume {params.resume}"
        " --threads {threads} > {log} 2>&1"


rule train_ridge:
    input:
        store_embeddings=store_input("embeddings"),
        store_dsm=store_input("dsm"),
        split_gpkg="results/{aoi}/split/split.gpkg",
        split_tif="results/{aoi}/split/split.tif",
        embeddings=aoi_input("results/{aoi}/inputs/embeddings.tif"),
    output:
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
        history="results/{aoi}/models/{model}/seed{seed}/history.csv",
    log:
        "results/{aoi}/logs/train/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/train/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(RIDGES),
    conda:
        "../../envs/train_ridge.yaml"
    threads: 1
    params:
        model=lambda w: section_json("models", w.model),
    shell:
        "python -m aefheight train-ridge --model {wildcards.model} --seed {wildcards.seed}"
        " --model-settings {params.model:q}"
        " --store-embeddings {input.store_embeddings} --store-dsm {input.store_dsm}"
        " --split-gpkg {input.split_gpkg} --split-tif {input.split_tif}"
        " --embeddings {input.embeddings} --checkpoint {output.checkpoint}"
        " --history {output.history} > {log} 2>&1"
