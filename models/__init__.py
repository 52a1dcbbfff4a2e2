"""Pure domain layer of journeyrec: types, journey-stage engine, model maths, metrics, artifact format.

Nothing in this package touches the network, the environment or a web framework; the only file I/O is
reading and writing model artifacts.
"""
