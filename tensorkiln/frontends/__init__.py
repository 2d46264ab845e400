"""Model frontends: turn a model file into a tensorkiln IR Graph."""
