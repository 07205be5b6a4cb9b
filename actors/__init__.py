"""Ray-facing adapters: Ray Data callable classes and actors that wrap `ecad_ray` objects."""
