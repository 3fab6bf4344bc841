"""Run at the start of every kernel that executes a chapter in the book's build.

book/_ext/scaleinv_book.py copies this file into the IPython profile that the build's
kernels use (``IPYTHONDIR`` under ``_build/``); a reader's Jupyter or Colab never runs it.

ipykernel sends printed text on a 0.2 s timer, so a loop that prints between slow steps
reaches the notebook as one stream output per step, and the book draws each as a box of
its own (Jupyter's own front ends join them on screen). Here the timer is made so long that
printed text is sent only where ipykernel flushes anyway: before a figure or table is
displayed and at the end of the cell. What a cell prints between two displays is then one
output, in its place. tests/test_build_outputs.py checks the executed chapters for it.
"""
import sys

for _stream in (sys.stdout, sys.stderr):
    if hasattr(_stream, "flush_interval"):  # ipykernel's OutStream
        _stream.flush_interval = 24 * 3600.0
del _stream
