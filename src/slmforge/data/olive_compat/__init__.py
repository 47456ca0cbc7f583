"""A stand-in for the few names of Olive that users' data scripts import (`from olive.data.registry import
Registry`, `olive.constants.Framework`, `olive.model` handler names in annotations).

This folder is put on sys.path (as the top-level package `olive`) only while slmforge imports a recipe's
`user_script`, and only when the real `olive` is not importable. What it does not provide fails on import,
naming the module (data/user_script.py turns that into one line).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent  # holds the package `olive`
