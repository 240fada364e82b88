"""Fitting a sampler to one model, without Lightning: so far the cached many-step reference solution of
the model from given noises, which the reference-solution error measures against and which every
tuning step (parameters fitted to a model on a few noises) is meant to reuse."""
