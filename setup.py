"""Package layout that setup.cfg cannot express: the models and the default config ship as data.

The checkout keeps `models/` and `firmware_config/` at the top (the training tools and the
docs point there); the wheel carries them inside the package as `agent/models/` and
`agent/defaults/` (agent/resources.py finds either). Only the production default config is
shipped from firmware_config/: never the example policies or their test keys.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["agent", "agent.*"]) + ["agent.models", "agent.defaults"],
    package_dir={"agent.models": "models", "agent.defaults": "firmware_config"},
    package_data={
        "agent": ["schemas/*.json"],
        "agent.models": ["manifest.json", "*.onnx"],
        "agent.defaults": ["plategate.toml"],
    },
    include_package_data=False,
)
