"""Test-session settings. OpenBLAS threads fight XLA's for the CI machine's two cores (one
SciPy test went from 0.07 s to 10 s under contention), so NumPy/SciPy run single-threaded here."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
