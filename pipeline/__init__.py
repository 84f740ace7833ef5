"""The streaming path: frames -> faces -> aligned crops -> embeddings -> matches -> tracks -> events."""
