"""Datasets of agent states: the on-disk format, collection with envpool, batched loading."""
