"""The seed tutorial's document-processing agent: OCR, classify, publish."""
