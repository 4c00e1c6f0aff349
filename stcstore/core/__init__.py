"""The shared core every stage uses: errors, names and option values, Arrow schemas, fingerprints, atomic
writes and the store lock, console output. Nothing here imports a stage."""
