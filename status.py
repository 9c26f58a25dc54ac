# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The state of the book
#
# Computed from the committed runs under `data/results/` (their `run.json` files and small
# tables), not typed: for each chapter, which presets have runs, what the runs say about the
# chapter's claim (with the criterion used), what is pending, and the compute spent. Runs at the
# `smoke` preset are never committed and are not counted.

# %% tags=["remove-input"]
from IPython.display import Markdown

from ncutils import book, store
from ncutils.plotting import DIRTY_NOTE, glue, style_table

runs = store.list_runs()
state = book.status_frame(runs)
hours = state.groupby("chapter", sort=False)["compute (h)"].sum()
for (doc, title, experiment), (_, part) in zip(book.CHAPTERS, state.groupby("chapter", sort=False)):
    text = "; ".join(f"{r.preset}: {r.verdict}" + (f" ({r.runs} runs, {r['compute (h)']:.1f} h)" if r.runs else "")
                     if r.runs else r["what the runs show"] for _, r in part.iterrows())
    glue(f"s_state_{doc.split('/')[-1][:2]}", text)
glue("s_compute_h", float(state["compute (h)"].sum()))
glue("s_runs", len(runs))
style_table(state, formats={"compute (h)": "{:.2f}"},
            caption="Per chapter and preset: the committed runs, their wall time, and the verdict "
                    "computed from them. 'pending' means no committed run at that preset yet.")

# %% tags=["remove-input"]
Markdown(f"**Total compute:** {state['compute (h)'].sum():.1f} hours of wall time over {len(runs)} committed "
         "runs (" + ", ".join(f"{t.split('. ', 1)[1]}: {h:.1f} h" for t, h in hours.items()) + ").")

# %% [markdown]
# ## Every committed run, in chapter order

# %% tags=["remove-input"]
table = book.runs_frame(runs)
if len(table):
    notes = []
    for column in ("device", "torch", "preset"):
        if table[column].nunique() == 1:  # the same for every run: said once, under the table
            notes.append(f"{column}: {table[column].iloc[0]}")
            table = table.drop(columns=column)
    n_dirty = int(table.pop("dirty").sum())
    caption = "All runs: " + ", ".join(notes) + ". " if notes else ""
    if n_dirty:
        caption += f"{n_dirty} of {len(table)} runs are dirty. " + DIRTY_NOTE
    shown = style_table(table, caption=caption, formats={"wall time (min)": "{:.1f}"})
else:
    shown = Markdown("No committed runs yet.")
shown
