"""Producing datasets locally: behaviour-policy training and Minari recording."""
