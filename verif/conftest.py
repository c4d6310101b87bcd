import sys
from pathlib import Path

# Testbenches import the golden models and the simulation helpers as top-level modules, the
# same way cocotb imports them inside the simulator.
sys.path.insert(0, str(Path(__file__).resolve().parent))
