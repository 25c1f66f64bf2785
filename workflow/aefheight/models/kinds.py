"""The kinds of model a config's ``models.<name>.arch`` names, apart from smp's nets.

Kept free of torch: Snakemake's main process reads them to plan the jobs.
"""

RIDGE = "ridge"  # models.<name>.arch of the Ridge baselines
COARSE_DEM = "coarse_dem"  # models.<name>.arch of the "no learning" baseline; any other is a net
BASELINE_ARCHS = (RIDGE, COARSE_DEM)
