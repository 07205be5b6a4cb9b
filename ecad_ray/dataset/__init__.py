"""Synthetic classification datasets from class names (the nameonly workflow, as one command).

`classes` owns the class sets (names and nameonly's per-class base counts) and how many images
each class gets; `prompts` writes nameonly's prompt JSON; the ledger and generation live beside them.
"""
