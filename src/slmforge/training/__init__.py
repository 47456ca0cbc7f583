"""The fine-tune step's parts: dataset batches, model loading, the training loop, checkpoints, tracking.

Our own loop rather than the Hugging Face Trainer (see training/loop.py): at equal math it is
faster and uses less memory (bench/finetune.py measures both), and it controls exactly what a
checkpoint holds so that a killed run resumes to the same adapter bytes as an uninterrupted one.
"""
