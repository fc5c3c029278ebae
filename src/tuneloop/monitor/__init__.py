"""Monitor stage: what production traffic looks like (request log statistics, online quality scores),
whether it drifted from the training data, alerts, and feedback that becomes the next training set."""
