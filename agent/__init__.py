"""PlateGate: reads licence plates on the camera and shares them only as the signed policy allows."""

__version__ = "0.1.0"
