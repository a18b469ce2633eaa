"""Synthetic licence-plate generator: plate text from agent.vision.plate_formats, drawn with free
fonts on procedurally made plates, then degraded the way roadside cameras degrade them.

Deterministic: sample ``i`` of seed ``s`` is always the same image (its random generator is
seeded with ``(s, i)``), so a training set can be regenerated anywhere from two numbers.
"""
