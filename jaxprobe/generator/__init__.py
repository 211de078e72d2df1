"""The generator of states: networks, losses, training, checkpoints, goggles and fidelity."""
