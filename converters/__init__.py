"""Model converters, installed as ``kerasq.converters`` (see setup.py ``package_dir``)."""
