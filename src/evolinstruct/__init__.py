"""evolinstruct: the WizardLM Evol-Instruct system, end to end."""

__version__ = "0.1.0"
