"""The three tools. ``ocr`` sleeps 3 seconds: that is the window to kill the worker in."""

from __future__ import annotations

import time

from ironflow import tool


@tool(description="Extract text from a document image")
def ocr(image_url: str) -> dict[str, object]:
    print(f"[ocr] extracting text from {image_url} (3s)...", flush=True)
    time.sleep(3)
    return {"text": f"Extracted text from {image_url}", "pages": 1}


@tool(description="Categorize a document by its text")
def classify(text: str) -> dict[str, str]:
    print(f"[classify] categorizing {len(text)} chars...", flush=True)
    time.sleep(0.2)
    return {"category": "invoice" if "invoice" in text else "other"}


@tool(description="Publish a document to its category's channel")
def publish(doc_id: str, category: str) -> dict[str, bool]:
    print(f"[publish] doc {doc_id} → {category} channel", flush=True)
    return {"published": True}
