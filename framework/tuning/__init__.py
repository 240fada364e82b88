"""Fitting a sampler to one model, without Lightning: the cached many-step reference solution that
the reference-solution error, DC-Solver's ratio search and solver-schedule search all measure against."""
