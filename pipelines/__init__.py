"""The engine: Wan2.2 variants, requests, loading, generation, previews and video files.

Nothing here imports Gradio or SQL, and nothing heavy is loaded at import time.
"""
