# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How each result was produced
#
# Every committed run under `data/results/`, read from its `run.json`: the experiment and preset,
# the device it ran on, the commit of the code, the torch version and the wall time. Runs at the
# `smoke` preset are never committed and are not listed.

# %% tags=["remove-input"]
import pandas as pd

from ncutils import store

runs = store.list_runs()
table = pd.DataFrame([{
    "experiment": r.experiment, "run": r.label, "preset": r.info["preset"], "device": r.info["device"],
    "commit": r.info["commit"], "torch": r.info["torch"],
    "wall time (min)": round(r.info["wall_seconds"] / 60, 1), "finished (UTC)": r.info["finished"],
} for r in runs])
table if len(table) else print("No committed runs yet.")
