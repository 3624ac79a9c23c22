"""The bottom layer: errors, the platform registry, normalisation, signature primitives. Imports nothing of the bridge."""
