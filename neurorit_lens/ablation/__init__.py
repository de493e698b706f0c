"""Causal tests: ablate neuron sets and compare them with random sets of the same shape.

Owns the ablation hooks and random controls, the measurement of Δ answer log-prob and Δ
accuracy under relevant and noisy contexts, and the result with paired bootstrap intervals.
"""
