"""Data code: reading rows (readers), the text template, chat rows, the datastore; the shipped tone rows."""

IGNORE = -100  # the label of a token the loss skips (PyTorch cross-entropy's ignore_index)
