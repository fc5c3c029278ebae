"""The demo's quick profile: what `tuneloop demo` changes in the shipped example so that it fits a coffee
break on two CPU cores (`tuneloop demo --full` runs the example as it is: every training step, every test
row, the edge cases and the general-capability regression checks).

Kept beside the pipelines, light enough to import before anything heavy (the CLI reads it first).
"""

QUICK = {
    "train.max_steps": 40,  # of 58: the adapter has learnt the format and the labels by then
    "train.eval_every": 0,  # validation loss once, at the end
    "eval.limit": 40,  # of 59 test rows
    "eval.edge_cases": None,
    "eval.regression": False,
    "eval.bootstrap": 200,
}
