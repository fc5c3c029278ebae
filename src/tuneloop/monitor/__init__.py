"""Monitor stage (`tuneloop monitor`): what production traffic looks like (request log statistics, online
quality scores), whether it drifted from the training data, alerts, and feedback that becomes the next
training set.

It reads the request log (tuneloop/db) and the versions it is given (`sources.Versions`); it imports no
other stage.
"""
