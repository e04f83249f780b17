"""CardSense shared package: card I/O and the one preprocessing path used by training and serving."""
