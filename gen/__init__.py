"""Hardware generator for INT8 DNN accelerators on ECP5 FPGAs."""

__version__ = "0.1.0"
