import os
import sys

# tests import helpers (toy_data) from this folder
sys.path.insert(0, os.path.dirname(__file__))
