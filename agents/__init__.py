"""Faust agents, one module per pipeline step; pure rules live beside each in ``*_rules``."""
