"""Verification of the generated hardware: PyTorch golden models, cocotb testbenches, stream
transactors and the Verilator runner.

Everything is imported as ``verif.<module>`` both by pytest and inside the simulator (the
package is part of the installed distribution; `verif.sim.run_cocotb` points the simulator at
this checkout only when the installed one is not it).
"""
