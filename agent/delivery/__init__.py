"""delivery stage."""
