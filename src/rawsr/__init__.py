"""rawsr: real-scene super-resolution from camera raw files.

An implementation of Xu, Ma, Sun and Yang, "Exploiting Raw Images for Real-Scene Super-Resolution"
(TPAMI 2021): an imaging-process simulation that makes training pairs from linear images, a two-branch
network (raw restoration plus colour correction from a low-resolution reference), and the entry points
``rawsr.train``, ``rawsr.evaluate``, ``rawsr.predict`` and ``rawsr.prepare``.
"""

__version__ = "0.1.0"
