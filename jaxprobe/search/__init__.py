"""Latent search: targets (energies over the agent's outputs) and the optimisation over latents."""
