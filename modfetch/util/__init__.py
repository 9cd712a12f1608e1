"""Small pure helpers shared by every layer: redaction, HTTP header parsing, file names, sizes."""
